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


def generate(root: Path, n: int, competitors: int, shard_size: int, seed: int = 0) -> None:
    """Write a complete scored run of n images (and its manifest and bounds) under root."""
    rng = np.random.default_rng(seed)
    c = len(CLASSES)
    names = [f"comp{j}" for j in range(competitors)]
    # like corpus.image_id_of: 32 hex characters of a content hash, in no particular order
    digits = rng.bytes(16 * n).hex()
    image_ids = np.array([digits[32 * i : 32 * (i + 1)] for i in range(n)], dtype=object)
    height = rng.integers(200, 800, size=n).astype(np.int32)
    width = rng.integers(200, 800, size=n).astype(np.int32)
    hw = height.astype(np.int64) * width
    target, base = _maps_counts(rng, n, c, hw)
    comp = [_maps_counts(rng, n, c, hw, base)[0] for _ in names]
    entropy = rng.gamma(2.0, 0.2, size=n)
    msp = 1.0 - rng.beta(2.0, 8.0, size=n)
    phash = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)
    phash[rng.random(n) < 0.01] = phash[0]  # some exact near-duplicates

    (root / "tables").mkdir(parents=True, exist_ok=True)
    manifest = pa.table(
        {
            "image_id": image_ids,
            "uri": np.char.add("s3://corpus/images/", image_ids.astype(str)).astype(object),
            "bytes": rng.integers(20_000, 400_000, size=n),
            "width": width,
            "height": height,
            "phash": phash,
            "ingested_at": pa.array(np.zeros(n, dtype="datetime64[us]")).cast(pa.timestamp("us", tz="UTC")),
        },
        schema=tables.MANIFEST.schema,
    )
    (root / "tables/manifest").mkdir(parents=True)
    pq.write_table(manifest, root / "tables/manifest/part-0.parquet", compression="zstd")

    for table in ("predictions", "pairs"):
        (root / "tables" / table / RUN_ID).mkdir(parents=True)
    (root / "runs" / RUN_ID / "shards").mkdir(parents=True)

    def write_shard(start: int) -> None:
        stop = min(start + shard_size, n)
        sl = slice(start, stop)
        k = stop - start
        shard = f"{start // shard_size:06d}"
        models = [("target", "target", target)] + [(name, "competitor", comp[j]) for j, name in enumerate(names)]
        preds = pa.concat_tables(
            pa.table(
                {
                    "run_id": [RUN_ID] * k,
                    "image_id": image_ids[sl],
                    "model": [model] * k,
                    "model_version": ["v0"] * k,
                    "role": [role] * k,
                    "height": height[sl],
                    "width": width[sl],
                    "class_pixels": _list_column(counts[sl]),
                    "mean_entropy": entropy[sl] if role == "target" else rng.gamma(2.0, 0.2, size=k),
                    "mean_msp": msp[sl] if role == "target" else 1.0 - rng.beta(2.0, 8.0, size=k),
                },
                schema=tables.PREDICTIONS.schema,
            )
            for model, role, counts in models
        )
        local = np.random.default_rng(seed + 1 + start)
        pair_tables = []
        for j, name in enumerate(names):
            inter, union, d = _pairs_iu(local, target[sl], comp[j][sl])
            pair_tables.append(
                pa.table(
                    {
                        "run_id": [RUN_ID] * k,
                        "image_id": image_ids[sl],
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
        pq.write_table(
            pa.concat_tables(pair_tables), root / "tables/pairs" / RUN_ID / f"{shard}.parquet", compression="zstd"
        )
        (root / "runs" / RUN_ID / "shards" / f"{shard}.json").write_text(json.dumps({"rows": k}))

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(write_shard, range(0, n, shard_size)))

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

    fractions = target / hw[:, None]
    rows = []
    for k in range(c):
        present = fractions[:, k][target[:, k] > 0][:50_000]
        p, q = np.quantile(present, [0.25, 0.75])
        rows.append((k, CLASSES[k], float(p), float(q), int(present.size)))
    bounds = pa.table(
        {
            "class_id": pa.array([r[0] for r in rows], pa.int32()),
            "class_name": [r[1] for r in rows],
            "p": [r[2] for r in rows],
            "q": [r[3] for r in rows],
            "n_images": pa.array([r[4] for r in rows], pa.int64()),
        }
    )
    (root / "tables/bounds").mkdir(parents=True)
    pq.write_table(bounds, root / "tables/bounds/bounds.parquet")


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
from madmine.steps.select import run_select
cfg = load_config(sys.argv[1])
t0 = time.perf_counter()
result = run_select(cfg, round_=0, strategy="mad")
elapsed = time.perf_counter() - t0
print(f"RESULT {elapsed:.3f} {result.num_images} {result.num_rows}")
"""


def time_select(config: Path) -> dict:
    """Select seconds (in the child), process wall and CPU seconds, |M|, rows, peak RSS (GiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, str(config)], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    select_s, images, rows = line.split()[1:]
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # ru_maxrss of children is the largest child so far: sizes run in increasing order
    return dict(select=float(select_s), wall=wall, cpu=cpu, images=int(images), rows=int(rows), peak=after.ru_maxrss / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--competitors", type=int, default=5)
    parser.add_argument("--shard-size", type=int, default=256, help="images per shard file (scoring default: 256)")
    parser.add_argument("--workdir", type=Path, default=Path("bench-work/select"))
    parser.add_argument("--keep", action="store_true", help="keep the generated workspaces")
    parser.add_argument("--reuse", action="store_true", help="time workspaces kept by an earlier --keep run")
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
        if not (args.keep or args.reuse):
            shutil.rmtree(root, ignore_errors=True)
    sizes = sorted(results)
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        print(f"time ratio {large:,} / {small:,} images: {results[large] / results[small]:.1f}x (process wall)")


if __name__ == "__main__":
    main()
