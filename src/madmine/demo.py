"""`madmine demo`: a real scoring job on a generated corpus, on the embedded local Ray.

It trains three small networks for a few seconds on clean generated images (no weights
can be downloaded here), writes a corpus of photo-like JPEGs of which a quarter are
shifted (low contrast, noise) plus two broken files, then runs the same code a cluster
runs: ingest, then score, then prints the images on which the target and its competitors
disagree most: mostly the shifted ones.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from PIL import Image
from rich.console import Console
from rich.table import Table

from madmine.config import load_config
from madmine.corpus import ingest
from madmine.score import score
from madmine.workspace import Workspace

CLASSES = ["background", "red", "green", "blue", "yellow", "magenta"]
COLOURS = np.array([[220, 40, 40], [40, 200, 60], [50, 70, 230], [230, 210, 40], [210, 50, 200]])
MODELS = [  # name, role, factory, training seed, training steps
    ("target", "target", "madmine.models.tiny:tiny_segnet", 0, 150),
    ("dilated", "competitor", "madmine.models.tiny:tiny_dilated", 1, 300),
    ("wide", "competitor", "madmine.models.tiny:tiny_segnet", 2, 400),
]
INPUT = 96


def draw(rng: np.random.Generator, h: int, w: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like image (gradient, discs coloured by class) and its exact label map.

    `shift` moves colours towards grey and adds noise: the corner cases of the corpus.
    """
    yy, xx = np.mgrid[0:h, 0:w]
    c0, c1 = rng.integers(0, 120, 3), rng.integers(0, 120, 3)
    t = ((xx * rng.random() + yy * rng.random()) / (h + w))[..., None]
    img = c0 * (1 - t) + c1 * t
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(1, len(CLASSES)))
        y, x, r = rng.integers(0, h), rng.integers(0, w), rng.integers(min(h, w) // 10, min(h, w) // 3)
        disc = (yy - y) ** 2 + (xx - x) ** 2 < r * r
        img[disc] = COLOURS[k - 1] * (1 - shift) + 128 * shift
        label[disc] = k
    img = np.clip(img + rng.normal(0, 4 + 40 * shift, img.shape), 0, 255).astype(np.uint8)
    return img, label


def train_models(folder: Path, console: Console) -> dict[str, Path]:
    """Three small networks trained for seconds on clean images (cached in `folder`)."""
    import torch

    from madmine.config import ModelSpec
    from madmine.models import build_network, forward_logits

    folder.mkdir(parents=True, exist_ok=True)
    weights = {}
    for name, role, factory, seed, steps in MODELS:
        path = folder / f"{name}.pt"
        weights[name] = path
        if path.exists():
            continue
        rng = np.random.default_rng(100 + seed)
        torch.manual_seed(seed)
        net = build_network(ModelSpec(name=name, role=role, factory=factory, seed=seed), len(CLASSES)).train()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        started = time.perf_counter()
        for _ in range(steps):
            pairs = [draw(rng, INPUT, INPUT) for _ in range(8)]
            x = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float() / 255.0
            y = torch.from_numpy(np.stack([p[1] for p in pairs])).long()
            loss = torch.nn.functional.cross_entropy(forward_logits(net, (x - mean) / std), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.save(net.eval().state_dict(), path)
        console.print(f"trained {name} ({factory}, {steps} steps) in {time.perf_counter() - started:.1f} s, last loss {loss.item():.3f}")
    return weights


def write_config(path: Path, weights: dict[str, Path]) -> None:
    text = '[workspace]\nuri = "workspace/"\n\n[classes]\nnames = ' + str(CLASSES).replace("'", '"') + "\n"
    for name, role, factory, _, _ in MODELS:
        text += (
            f'\n[[models]]\nname = "{name}"\nrole = "{role}"\nfactory = "{factory}"\n'
            f'weights = "{weights[name].relative_to(path.parent)}"\ninput_size = {INPUT}\n'
        )
    text += "\n[scoring]\nbatch_size = 8\nshard_size = 64\n"
    path.write_text(text)


def write_photos(folder: Path, n: int, seed: int = 0) -> None:
    """The corpus: mostly clean images, a quarter of them shifted (low contrast, noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = int(rng.integers(120, 260)), int(rng.integers(140, 300))
        shift = float(rng.uniform(0.3, 0.7)) if i % 4 == 0 else 0.0
        img, _ = draw(rng, h, w, shift)
        Image.fromarray(img).save(folder / f"photo_{i:04d}.jpg", quality=90)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_bytes(b"a text file with an image name\n")


def run_demo(workdir: Path, images: int = 64) -> None:
    console = Console()
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "madmine.toml"
    write_config(config_path, train_models(workdir / "weights", console))
    corpus = workdir / "corpus"
    if not corpus.exists():
        write_photos(corpus, images)
    config = load_config(config_path)
    workspace = Workspace.from_config(config)

    started = time.perf_counter()
    ingested = ingest(workspace, [str(corpus)], storage_options=config.storage_options)
    console.print(
        f"ingest: {ingested.added} new images, {len(ingested.errors)} unreadable files recorded in the errors table "
        f"({time.perf_counter() - started:.1f} s)"
    )
    result = score(config)
    console.print(
        f"score: run {result.run_id}: {result.images_scored} images in {result.shards_scored} shards, "
        f"{result.errors} errors, {result.seconds:.1f} s"
    )

    pairs = workspace.read_table("pairs", result.run_id)
    manifest = {r["image_id"]: r["uri"] for r in workspace.read_table("manifest").to_pylist()}
    table = Table(title="largest discrepancies d = 1 - mIoU(target, competitor)")
    for col in ("competitor", "d", "image"):
        table.add_column(col)
    top = pairs.filter(pc.is_valid(pairs.column("d"))).sort_by([("d", "descending"), ("image_id", "ascending")])
    for row in top.slice(0, 10).to_pylist():
        table.add_row(row["competitor"], f"{row['d']:.3f}", Path(manifest[row["image_id"]]).name)
    console.print(table)
    mean_d = {
        name: pc.mean(pairs.filter(pc.field("competitor") == name).column("d")).as_py()
        for name in pc.unique(pairs.column("competitor")).to_pylist()
    }
    console.print("mean d per competitor: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(mean_d.items())))
    worst: list[str] = []
    for image_id in top.column("image_id").to_pylist():
        if image_id not in worst:
            worst.append(image_id)
    worst = worst[:20]
    shifted = sum(int(Path(manifest[i]).stem.split("_")[1]) % 4 == 0 for i in worst)
    console.print(
        f"shifted (corner-case) images among the 20 of largest d: {shifted}/20 "
        f"(they are {sum(1 for u in manifest.values() if int(Path(u).stem.split('_')[1]) % 4 == 0)}/{len(manifest)} of the corpus)"
    )
    console.print(
        textwrap.dedent(
            f"""
            Tables are Parquet under {workspace.root}/tables; ask questions of them with DuckDB, e.g.
              madmine --config {config_path} sql "select competitor, avg(d) from pairs group by 1"
            """
        ).rstrip()
    )
