"""Benchmark `madmine select` on scoring tables shaped like real ones.

Generates a workspace with `predictions`, `pairs`, `manifest` and `bounds` for N images x
m competitors x c classes (sparse maps: background plus one to three object classes per
image, competitors that mostly agree with the target), then times `madmine select` end to
end in a subprocess and reports its wall time and peak memory (RSS of the child).

    python -m bench.selection                      # 100,000 and 1,000,000 images x 5 competitors
    python -m bench.selection --sizes 20000 --competitors 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from madmine import tables

RUN_ID = "bench-run"
CLASSES = ["background"] + [f"class{k:02d}" for k in range(1, 21)]


def _maps_counts(rng: np.random.Generator, n: int, c: int, hw: np.ndarray, base_classes=None):
    """Per-class pixel counts of n sparse maps: background + 1..3 object classes."""
    slots = 3
    classes = rng.integers(1, c, size=(n, slots)) if base_classes is None else base_classes.copy()
    if base_classes is not None:  # a competitor: usually the same classes, sometimes another
        swap = rng.random((n, slots)) < 0.15
        classes[swap] = rng.integers(1, c, size=int(swap.sum()))
    used = rng.random((n, slots)) < np.array([1.0, 0.5, 0.2])
    weights = rng.dirichlet(np.ones(slots + 1) * 0.7, size=n)
    weights[:, 1:] *= used
    weights /= weights.sum(axis=1, keepdims=True)
    counts = np.zeros((n, c), dtype=np.int64)
    pixels = np.floor(weights * hw[:, None]).astype(np.int64)
    rows = np.arange(n)
    for s in range(slots):
        np.add.at(counts, (rows, classes[:, s]), pixels[:, s + 1])
    counts[:, 0] = hw - counts[:, 1:].sum(axis=1)
    return counts, classes


def _list_column(values: np.ndarray) -> pa.ListArray:
    n, c = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * c, c, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel()))


def _pairs_iu(rng: np.random.Generator, a: np.ndarray, b: np.ndarray):
    """Plausible intersections and unions for two count vectors, and d = 1 - mean IoU."""
    agree = rng.uniform(0.3, 1.0, size=(a.shape[0], 1))
    inter = np.floor(np.minimum(a, b) * agree).astype(np.int64)
    union = a + b - inter
    present = union > 0
    iou = np.where(present, inter / np.maximum(union, 1), 0.0)
    d = 1.0 - iou.sum(axis=1) / present.sum(axis=1)
    return inter, union, d


GENERATE_CHUNK = 1 << 19  # images generated at a time: memory stays flat whatever N


def _chunk_images(n: int, start: int, competitors: int, seed: int) -> dict:
    """The images [start, start + n) of the workspace: ids, sizes, maps' counts, d's inputs."""
    rng = np.random.default_rng([seed, start])
    c = len(CLASSES)
    # like corpus.image_id_of: 32 hex characters of a content hash, in no particular order
    digits = rng.bytes(16 * n).hex()
    image_ids = np.array([digits[32 * i : 32 * (i + 1)] for i in range(n)], dtype=object)
    height = rng.integers(200, 800, size=n).astype(np.int32)
    width = rng.integers(200, 800, size=n).astype(np.int32)
    hw = height.astype(np.int64) * width
    target, base = _maps_counts(rng, n, c, hw)
    comp = [_maps_counts(rng, n, c, hw, base)[0] for _ in range(competitors)]
    phash = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)
    phash[rng.random(n) < 0.01] = np.uint64(0x5BD1E995 + seed)  # some exact near-duplicates, across chunks too
    return dict(image_ids=image_ids, height=height, width=width, hw=hw, target=target, comp=comp, phash=phash,
                entropy=rng.gamma(2.0, 0.2, size=n), msp=1.0 - rng.beta(2.0, 8.0, size=n),
                nbytes=rng.integers(20_000, 400_000, size=n))


def _manifest_chunk(img: dict) -> pa.Table:
    n = len(img["image_ids"])
    return pa.table(
        {
            "image_id": img["image_ids"],
            "uri": np.char.add("s3://corpus/images/", img["image_ids"].astype(str)).astype(object),
            "bytes": img["nbytes"],
            "width": img["width"],
            "height": img["height"],
            "phash": img["phash"],
            "ingested_at": pa.array(np.zeros(n, dtype="datetime64[us]")).cast(pa.timestamp("us", tz="UTC")),
        },
        schema=tables.MANIFEST.schema,
    )


def _write_shard(root: Path, img: dict, offset: int, start: int, stop: int, shard_size: int, names: list[str],
                 seed: int) -> None:
    """One scoring shard's predictions and pairs files and its marker (rows [start, stop) of the chunk)."""
    sl = slice(start, stop)
    k = stop - start
    shard = f"{(offset + start) // shard_size:06d}"
    models = [("target", "target", img["target"])] + [(name, "competitor", img["comp"][j]) for j, name in enumerate(names)]
    local = np.random.default_rng([seed, 1, offset + start])
    preds = pa.concat_tables(
        pa.table(
            {
                "run_id": [RUN_ID] * k,
                "image_id": img["image_ids"][sl],
                "model": [model] * k,
                "model_version": ["v0"] * k,
                "role": [role] * k,
                "height": img["height"][sl],
                "width": img["width"][sl],
                "class_pixels": _list_column(counts[sl]),
                "mean_entropy": img["entropy"][sl] if role == "target" else local.gamma(2.0, 0.2, size=k),
                "mean_msp": img["msp"][sl] if role == "target" else 1.0 - local.beta(2.0, 8.0, size=k),
            },
            schema=tables.PREDICTIONS.schema,
        )
        for model, role, counts in models
    )
    pair_tables = []
    for j, name in enumerate(names):
        inter, union, d = _pairs_iu(local, img["target"][sl], img["comp"][j][sl])
        pair_tables.append(
            pa.table(
                {
                    "run_id": [RUN_ID] * k,
                    "image_id": img["image_ids"][sl],
                    "target_version": ["v0"] * k,
                    "competitor": [name] * k,
                    "competitor_version": ["v0"] * k,
                    "intersection": _list_column(inter),
                    "union": _list_column(union),
                    "d": d,
                },
                schema=tables.PAIRS.schema,
            )
        )
    pq.write_table(preds, root / "tables/predictions" / RUN_ID / f"{shard}.parquet", compression="zstd")
    pq.write_table(pa.concat_tables(pair_tables), root / "tables/pairs" / RUN_ID / f"{shard}.parquet", compression="zstd")
    (root / "runs" / RUN_ID / "shards" / f"{shard}.json").write_text(json.dumps({"rows": k}))


def _bounds(img: dict) -> pa.Table:
    """Quartiles of the target's class fractions over the first images that hold each class."""
    fractions = img["target"] / img["hw"][:, None]
    rows = []
    for k in range(len(CLASSES)):
        present = fractions[:, k][img["target"][:, k] > 0][:50_000]
        p, q = np.quantile(present, [0.25, 0.75])
        rows.append((k, CLASSES[k], float(p), float(q), int(present.size)))
    return pa.table(
        {
            "class_id": pa.array([r[0] for r in rows], pa.int32()),
            "class_name": [r[1] for r in rows],
            "p": [r[2] for r in rows],
            "q": [r[3] for r in rows],
            "n_images": pa.array([r[4] for r in rows], pa.int64()),
        }
    )


def generate(root: Path, n: int, competitors: int, shard_size: int, seed: int = 0) -> None:
    """Write a complete scored run of n images (and its manifest and bounds) under root, a chunk at a time."""
    names = [f"comp{j}" for j in range(competitors)]
    for folder in ("tables/manifest", "tables/bounds", f"tables/predictions/{RUN_ID}", f"tables/pairs/{RUN_ID}",
                   f"runs/{RUN_ID}/shards"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    chunk = max(shard_size, GENERATE_CHUNK // shard_size * shard_size)
    manifest = pq.ParquetWriter(root / "tables/manifest/part-0.parquet", tables.MANIFEST.schema, compression="zstd")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for offset in range(0, n, chunk):
            img = _chunk_images(min(chunk, n - offset), offset, competitors, seed)
            size = len(img["image_ids"])
            if offset == 0:
                pq.write_table(_bounds(img), root / "tables/bounds/bounds.parquet")
            manifest.write_table(_manifest_chunk(img))
            starts = range(0, size, shard_size)
            list(pool.map(lambda s: _write_shard(root, img, offset, s, min(s + shard_size, size), shard_size, names,
                                                  seed), starts))
    manifest.close()
    record = {
        "run_id": RUN_ID,
        "created_at": "2026-01-01T00:00:00+00:00",
        "status": "complete",
        "classes": CLASSES,
        "models": [{"name": "target", "role": "target", "version": "v0"}]
        + [{"name": name, "role": "competitor", "version": "v0"} for name in names],
        "shard_size": shard_size,
    }
    (root / "runs" / RUN_ID / "run.json").write_text(json.dumps(record))


def write_config(root: Path, competitors: int) -> Path:
    lines = [f'[workspace]\nuri = "{root}"\n', f"[classes]\nnames = {json.dumps(CLASSES)}\n"]
    maps = root / "maps"
    maps.mkdir(exist_ok=True)
    for name, role in [("target", "target")] + [(f"comp{j}", "competitor") for j in range(competitors)]:
        lines.append(f'[[models]]\nname = "{name}"\nrole = "{role}"\nmaps = "{maps}"\n')
    lines.append("[selection]\nn3 = 25\n")
    path = root / "madmine.toml"
    path.write_text("\n".join(lines))
    return path


_CHILD = """
import resource, sys, time
from madmine.config import load_config
from madmine.steps import select
cfg = load_config(sys.argv[1])
if len(sys.argv) > 2:
    select.PART_IMAGES = int(sys.argv[2])
t0 = time.perf_counter()
result = select.run_select(cfg, round_=0, strategy="mad")
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"RESULT {elapsed:.3f} {result.num_images} {result.num_rows} {peak}")
"""


def time_select(config: Path, part_images: int | None = None) -> dict:
    """Select seconds (in the child), process wall and CPU seconds, |M|, rows, peak RSS of the child (GiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    extra = [] if part_images is None else [str(part_images)]
    out = subprocess.run([sys.executable, "-c", _CHILD, str(config), *extra], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    select_s, images, rows, peak = line.split()[1:]
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return dict(select=float(select_s), wall=wall, cpu=cpu, images=int(images), rows=int(rows), peak=int(peak) / 2**20)


def sample_workspace(root: Path, images: int, shard_size: int) -> Path:
    """A workspace of the first `images` images' shards of `root` (links, not copies)."""
    sample = root.with_name(root.name + "-sample")
    shutil.rmtree(sample, ignore_errors=True)
    shards = sorted(p.name for p in (root / "runs" / RUN_ID / "shards").iterdir())[: max(1, images // shard_size)]
    for folder in (f"tables/predictions/{RUN_ID}", f"tables/pairs/{RUN_ID}", f"runs/{RUN_ID}/shards"):
        (sample / folder).mkdir(parents=True)
    for name in shards:
        stem = name[: -len(".json")]
        (sample / "runs" / RUN_ID / "shards" / name).symlink_to(root / "runs" / RUN_ID / "shards" / name)
        for table in ("predictions", "pairs"):
            (sample / "tables" / table / RUN_ID / f"{stem}.parquet").symlink_to(
                root / "tables" / table / RUN_ID / f"{stem}.parquet")
    for name in ("tables/manifest", "tables/bounds"):
        (sample / name).symlink_to(root / name)
    (sample / "runs" / RUN_ID / "run.json").symlink_to(root / "runs" / RUN_ID / "run.json")
    config = root / "madmine.toml"
    (sample / "madmine.toml").write_text(config.read_text().replace(f'uri = "{root}"', f'uri = "{sample}"'))
    return sample


def check_parts(root: Path, n: int, shard_size: int) -> str:
    """On a sample of at most 1M images: the candidates of one pass (the path a 1M run takes) against
    those of the same run ranked in 8 parts (the path larger runs take)."""
    images = min(n, 1_000_000)
    sample = sample_workspace(root, images, shard_size)
    candidates = sample / "tables" / "candidates" / "round-0-mad.parquet"
    time_select(sample / "madmine.toml", part_images=10 * images)
    whole = pq.read_table(candidates)
    time_select(sample / "madmine.toml", part_images=max(1, images // 8))
    parts = pq.read_table(candidates)
    shutil.rmtree(sample)
    same = "identical" if whole.equals(parts) else "DIFFERENT"
    return f"check on {images:,} of the images: one pass and 8 parts give {same} candidates ({whole.num_rows} rows)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--competitors", type=int, default=5)
    parser.add_argument("--shard-size", type=int, default=256, help="images per shard file (scoring default: 256)")
    parser.add_argument("--workdir", type=Path, default=Path("bench-work/select"))
    parser.add_argument("--keep", action="store_true", help="keep the generated workspaces")
    parser.add_argument("--reuse", action="store_true", help="time workspaces kept by an earlier --keep run")
    parser.add_argument("--check", action="store_true",
                        help="also compare one pass with a run ranked in parts, on a sample of at most 1M images")
    args = parser.parse_args()

    results = {}
    for n in sorted(args.sizes):
        root = (args.workdir / f"n{n}").resolve()
        t0 = time.perf_counter()
        if not (args.reuse and (root / "madmine.toml").exists()):
            shutil.rmtree(root, ignore_errors=True)
            generate(root, n, args.competitors, args.shard_size)
            write_config(root, args.competitors)
        config = root / "madmine.toml"
        gen_s = time.perf_counter() - t0
        r = time_select(config)
        results[n] = r["wall"]
        print(
            f"{n:>9,} images x {args.competitors} competitors x {len(CLASSES)} classes: "
            f"select {r['select']:.2f} s (process {r['wall']:.2f} s wall, {r['cpu']:.1f} s CPU), "
            f"peak RSS {r['peak']:.2f} GiB, |M| = {r['images']}, {r['rows']} candidate rows  "
            f"[data generated in {gen_s:.0f} s; load average {os.getloadavg()[0]:.1f}]",
            flush=True,
        )
        if args.check:
            print("  " + check_parts(root, n, args.shard_size), flush=True)
        if not (args.keep or args.reuse):
            shutil.rmtree(root, ignore_errors=True)
    sizes = sorted(results)
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        print(f"time ratio {large:,} / {small:,} images: {results[large] / results[small]:.1f}x (process wall)")


if __name__ == "__main__":
    main()
