"""Writing the world to disk: the folders that madmine and the simulated people read.

    <root>/<dataset>/images/<dataset>_NNNNN.jpg   what models, raters and annotators see
    <root>/<dataset>/labels/<dataset>_NNNNN.png   the exact label map (class ids)
    <root>/<dataset>/index.parquet                stem, kind, width, height, classes
    <root>/<dataset>/done.json                    written last: (seed, domain, size); a match skips the work

Images are JPEGs, as photos are; labels are the geometry, untouched by compression. Two
processes render in parallel (the machine has two cores); each image comes from its own
seed, so the split between them changes nothing.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from madmine_demo.world.failures import sample
from madmine_demo.world.scene import render

JPEG_QUALITY = 92
INDEX = pa.schema(
    [
        ("stem", pa.string()),
        ("kind", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("classes", pa.list_(pa.int32())),
    ]
)


@dataclass(frozen=True)
class Dataset:
    root: Path
    name: str

    @property
    def images(self) -> Path:
        return self.root / self.name / "images"

    @property
    def labels(self) -> Path:
        return self.root / self.name / "labels"

    def image(self, stem: str) -> Path:
        return self.images / f"{stem}.jpg"

    def label(self, stem: str) -> Path:
        return self.labels / f"{stem}.png"

    def index(self) -> pa.Table:
        return pq.read_table(self.root / self.name / "index.parquet")

    def kinds(self) -> dict[str, str]:
        """stem -> kind of scene (typical, a corner case, or ood)."""
        t = self.index()
        return dict(zip(t.column("stem").to_pylist(), t.column("kind").to_pylist()))


def stem(name: str, index: int) -> str:
    return f"{name}_{index:05d}"


def _write_chunk(ds: Dataset, seed: int, domain: str, indices: list[int]) -> list[dict]:
    rows = []
    for i in indices:
        scene = sample(seed, ds.name, i, domain)
        img, label = render(scene)
        s = stem(ds.name, i)
        Image.fromarray(img).save(ds.image(s), quality=JPEG_QUALITY)
        Image.fromarray(label, "L").save(ds.label(s))
        present = sorted({int(k) for k in set(label.ravel().tolist())} - {0})
        rows.append({"stem": s, "kind": scene.kind, "width": scene.width, "height": scene.height, "classes": present})
    return rows


def write(root: Path, name: str, size: int, seed: int, domain: str, workers: int = 2) -> Dataset:
    """Render `size` scenes of `domain` into root/name, unless the same ones are there already."""
    ds = Dataset(Path(root), name)
    marker = ds.root / name / "done.json"
    params = {"seed": seed, "domain": domain, "size": size}
    if marker.exists() and json.loads(marker.read_text()) == params:
        return ds
    ds.images.mkdir(parents=True, exist_ok=True)
    ds.labels.mkdir(parents=True, exist_ok=True)
    chunks = [list(range(k, size, workers * 4)) for k in range(workers * 4)]
    rows: list[dict] = []
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for part in pool.map(_write_chunk, [ds] * len(chunks), [seed] * len(chunks), [domain] * len(chunks), chunks):
                rows.extend(part)
    else:
        for chunk in chunks:
            rows.extend(_write_chunk(ds, seed, domain, chunk))
    rows.sort(key=lambda r: r["stem"])
    pq.write_table(pa.Table.from_pylist(rows, schema=INDEX), ds.root / name / "index.parquet")
    marker.write_text(json.dumps(params))
    return ds
