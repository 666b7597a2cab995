"""A random scored world written in the workspace layout, for selection tests: predictions
and pairs of several runs, bounds, ratings, labels and test sets, with the pure-Python
reference selection (selection_reference) to compare the SQL with."""

from __future__ import annotations

import hashlib
import json
import random
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image
from typer.testing import CliRunner

import selection_reference as ref
from madmine import metrics, tables
from madmine.cli import app
from madmine.completion import shard_markers
from madmine.config import Config, load_config
from madmine.workspace import Workspace

CLASSES = ["background", "cat", "dog", "car", "tree", "boat"]
RUN_ID = "run-b"


@dataclass
class World:
    config: Config
    config_path: Path
    ws: Workspace
    predictions: list[dict]
    pairs: list[dict]
    uris: dict[str, str]
    phash: dict[str, int]
    bounds: dict[int, tuple[float, float] | None]
    rated: list[tuple[int, str]] = field(default_factory=list)
    labelled: set[str] = field(default_factory=set)
    test_set: set[str] = field(default_factory=set)

    def excluded(self, round_: int) -> dict[str, set[str]]:
        run_images = {r["image_id"] for r in self.predictions}
        distance = self.config.selection.phash_distance
        return ref.excluded_images(run_images, self.phash, self.rated, self.labelled, self.test_set, round_, distance)

    def reference(self, round_: int, n3: int, class_ids=None) -> list[dict]:
        excluded = set().union(*self.excluded(round_).values())
        class_ids = class_ids or list(range(1, len(CLASSES)))
        return ref.mad_candidates(
            self.predictions, self.pairs, self.bounds, self.uris, excluded, n3, round_, class_ids, CLASSES
        )


def class_pixels_numpy(label_map: np.ndarray, c: int) -> list[int]:
    return [int(np.sum(label_map == k)) for k in range(c)]


def pair_numpy(a: np.ndarray, b: np.ndarray, c: int) -> tuple[list[int], list[int], float | None]:
    """I_k, U_k and d = 1 - mean_{U_k > 0} I_k / U_k, straight from the definition."""
    valid = (a != 255) & (b != 255)
    inter = [int(np.sum((a == k) & (b == k) & valid)) for k in range(c)]
    union = [int(np.sum(((a == k) | (b == k)) & valid)) for k in range(c)]
    ious = [i / u for i, u in zip(inter, union) if u > 0]
    return inter, union, (1.0 - sum(ious) / len(ious)) if ious else None


def random_map(rng: np.random.Generator, shape: tuple[int, int], c: int) -> np.ndarray:
    """A small map of few classes, so that fractions and discrepancies often tie."""
    present = rng.choice(np.arange(c), size=rng.integers(1, 4), replace=False)
    m = rng.choice(present, size=shape).astype(np.uint8)
    if rng.random() < 0.15:
        m[rng.random(shape) < 0.2] = 255
    return m


def perturb(rng: np.random.Generator, m: np.ndarray, c: int) -> np.ndarray:
    out = m.copy()
    flip = rng.random(m.shape) < rng.uniform(0.0, 0.6)
    out[flip] = rng.integers(0, c, size=int(flip.sum()))
    return out


def write_run(ws, run_id, created_at, status, rows_pred, rows_pair, shard_size, committed=True, rng=None):
    models = sorted({(r["model"], r["role"]) for r in rows_pred})
    ws.put_json(
        ws.path("runs", run_id, "run.json"),
        {
            "run_id": run_id,
            "created_at": created_at,
            "status": status,
            "classes": CLASSES,
            "models": [{"name": m, "role": role, "version": "v1"} for m, role in models],
            "shard_size": shard_size,
        },
    )
    images = sorted({r["image_id"] for r in rows_pred})
    if rng is not None:
        rng.shuffle(images)
    for s, start in enumerate(range(0, len(images), shard_size)):
        chunk = set(images[start : start + shard_size])
        shard = f"{s:05d}"
        pred = [r for r in rows_pred if r["image_id"] in chunk]
        pair = [r for r in rows_pair if r["image_id"] in chunk]
        if rng is not None:
            rng.shuffle(pred)
            rng.shuffle(pair)
        ws.write_parquet(tables.PREDICTIONS.path(ws, run_id=run_id, shard=shard), pa.Table.from_pylist(pred, tables.PREDICTIONS.schema))
        ws.write_parquet(tables.PAIRS.path(ws, run_id=run_id, shard=shard), pa.Table.from_pylist(pair, tables.PAIRS.schema))
        if committed:
            ws.put_json(shard_markers(ws, run_id).path(shard), {"rows": len(chunk)})


def make_rows(rng, image_ids, competitors, run_id):
    c = len(CLASSES)
    shapes = [(4, 4), (3, 5), (4, 6), (2, 8)]
    preds, pairs = [], []
    for n, image_id in enumerate(image_ids):
        shape = shapes[rng.integers(len(shapes))]
        target = random_map(rng, shape, c)
        if n == 0:
            target[:] = 255  # no valid pixel: d is NULL for every pair, the image never ranks
        maps = {"target": target} | {j: perturb(rng, target, c) for j in competitors}
        for model, m in maps.items():
            role = "target" if model == "target" else "competitor"
            counts = class_pixels_numpy(m, c)
            assert counts == metrics.class_pixels(m, c).tolist()
            entropy = None if rng.random() < 0.1 else round(float(rng.uniform(0, 2)), 1)
            msp = None if rng.random() < 0.1 else round(float(rng.uniform(0.3, 1)), 1)
            preds.append(
                dict(run_id=run_id, image_id=image_id, model=model, model_version="v1", role=role,
                     height=shape[0], width=shape[1], class_pixels=counts, mean_entropy=entropy, mean_msp=msp)
            )
        for j in competitors:
            inter, union, d = pair_numpy(target, maps[j], c)
            i2, u2, d2 = metrics.pair_summary(target, maps[j], c)
            assert inter == i2.tolist() and union == u2.tolist() and d == d2
            pairs.append(
                dict(run_id=run_id, image_id=image_id, target_version="v1", competitor=j, competitor_version="v1",
                     intersection=inter, union=union, d=d)
            )
    return preds, pairs


def quartile_bounds(preds: list[dict]) -> dict[int, tuple[float, float] | None]:
    """Bounds that land exactly on fractions present in the data (inclusivity is tested)."""
    bounds = {}
    for k in range(1, len(CLASSES)):
        fractions = sorted(
            r["class_pixels"][k] / (r["height"] * r["width"])
            for r in preds
            if r["role"] == "target" and r["class_pixels"][k] > 0
        )
        if k == len(CLASSES) - 1 or not fractions:
            bounds[k] = None  # a class no labelled image shows: it forms no group
        else:
            bounds[k] = (fractions[len(fractions) // 5], fractions[(len(fractions) * 4) // 5])
    return bounds


def write_bounds(ws, bounds):
    rows = [dict(class_id=0, class_name=CLASSES[0], p=0.2, q=0.9, n_images=3)]
    for k, b in bounds.items():
        rows.append(dict(class_id=k, class_name=CLASSES[k], p=b and b[0], q=b and b[1], n_images=0 if b is None else 5))
    schema = pa.schema([("class_id", pa.int32()), ("class_name", pa.string()), ("p", pa.float64()),
                        ("q", pa.float64()), ("n_images", pa.int64())])
    ws.write_parquet(tables.BOUNDS.path(ws), pa.Table.from_pylist(rows, schema))


def config_text(workspace: str, maps_dir: Path, competitors, selection: str = "", storage: str = "") -> str:
    models = '[[models]]\nname = "target"\nrole = "target"\nmaps = "{m}"\n'.format(m=maps_dir)
    for j in competitors:
        models += f'\n[[models]]\nname = "{j}"\nrole = "competitor"\nmaps = "{maps_dir}"\n'
    return (
        f'[workspace]\nuri = "{workspace}"\n\n{storage}\n[classes]\nnames = {json.dumps(CLASSES)}\n\n'
        f"{models}\n[selection]\n{textwrap.dedent(selection)}\n"
    )


def build_world(
    folder: Path,
    seed: int = 0,
    n_images: int = 70,
    competitors=("fcn", "psp", "lraspp"),
    workspace: str | None = None,
    storage: str = "",
    selection: str = "",
    shard_size: int = 16,
    shuffle: bool = False,
    extras: bool = True,
) -> World:
    """A scored run of random maps, plus the decoys selection must ignore."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    maps_dir = folder / "maps"
    maps_dir.mkdir(exist_ok=True)
    workspace = workspace or str(folder / "work")
    path = folder / "madmine.toml"
    path.write_text(config_text(workspace, maps_dir, competitors, selection, storage))
    config = load_config(path)
    ws = Workspace.from_config(config)

    ids = [hashlib.sha1(f"{seed}-{i}".encode()).hexdigest()[:16] for i in range(n_images)]
    preds, pairs = make_rows(rng, ids, competitors, RUN_ID)
    order = random.Random(seed) if shuffle else None
    write_run(ws, RUN_ID, "2026-01-02T00:00:00+00:00", "complete", preds, pairs, shard_size, rng=order)

    uris = {i: f"s3://corpus/{i}.jpg" for i in ids}
    phash = {i: int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2)) for i in ids}
    if extras:
        # decoys: an uncommitted shard, an older complete run, a newer unfinished run
        ghosts = [f"ghost{i}" for i in range(5)]
        g_pred, g_pair = make_rows(rng, ghosts, competitors, RUN_ID)
        for r in g_pair:
            r["d"] = 1.0
        ws.write_parquet(tables.PREDICTIONS.path(ws, run_id=RUN_ID, shard="99999"), pa.Table.from_pylist(g_pred, tables.PREDICTIONS.schema))
        ws.write_parquet(tables.PAIRS.path(ws, run_id=RUN_ID, shard="99999"), pa.Table.from_pylist(g_pair, tables.PAIRS.schema))
        old_pred, old_pair = make_rows(np.random.default_rng(seed + 100), ids[:30], competitors, "run-a")
        write_run(ws, "run-a", "2026-01-01T00:00:00+00:00", "complete", old_pred, old_pair, shard_size)
        new_pred, new_pair = make_rows(np.random.default_rng(seed + 200), ids[:30], competitors, "run-c")
        write_run(ws, "run-c", "2026-01-03T00:00:00+00:00", "running", new_pred, new_pair, shard_size)
        # duplicates: identical hashes, hashes 1 and 2 bits apart, and one image at two uris
        phash[ids[5]] = phash[ids[6]] = phash[ids[7]]
        phash[ids[9]] = phash[ids[8]] ^ 1
        phash[ids[11]] = phash[ids[10]] ^ 0b101
        phash[ids[12]] = None
        uris[ids[3]] = "s3://corpus/a-first-copy.jpg"

    manifest = [
        dict(image_id=i, uri=uris[i], bytes=100, width=8, height=8, phash=phash[i], ingested_at=None) for i in ids
    ]
    if extras:
        manifest.append(dict(manifest[3], uri="s3://corpus/z-second-copy.jpg"))
    half = len(manifest) // 2
    ws.write_parquet(tables.MANIFEST.path(ws, part="part-0"), pa.Table.from_pylist(manifest[:half], tables.MANIFEST.schema))
    ws.write_parquet(tables.MANIFEST.path(ws, part="part-1"), pa.Table.from_pylist(manifest[half:], tables.MANIFEST.schema))

    bounds = quartile_bounds(preds)
    write_bounds(ws, bounds)
    world = World(config, path, ws, preds, pairs, uris, phash, bounds)
    if extras:
        world.rated = [(0, ids[20]), (0, ids[21]), (1, ids[22])]
        world.labelled = {ids[23], ids[24]}
        world.test_set = {ids[25]}
        ratings = [dict(round=r, image_id=i, rater="ann", score=2, created_at=None) for r, i in world.rated]
        ws.write_parquet(tables.RATINGS.path(ws, round=0), pa.Table.from_pylist(ratings))
        labels = [dict(image_id=i, mask_uri=f"m/{i}.png", source="cvat", round=0, created_at=None) for i in world.labelled]
        ws.write_parquet(tables.LABELS.path(ws, part="labels"), pa.Table.from_pylist(labels))
        tests = [dict(round=1, image_id=i) for i in world.test_set]
        ws.write_parquet(tables.TESTSETS.path(ws, round=1), pa.Table.from_pylist(tests))
    return world


REF_COLUMNS = ["round", "image_id", "uri", "competitor", "direction", "class_id", "class_name", "class_fraction", "d", "rank"]


def selected(table: pa.Table, columns=REF_COLUMNS) -> list[dict]:
    return table.select(columns).to_pylist()


def invoke(args: list[str]):
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    return result, result.stdout + (result.stderr or "")


def write_labels(folder: Path, seed: int = 0, n: int = 30) -> list[np.ndarray]:
    """Random label maps as palette PNGs (VOC style) and grayscale PNGs, some with 255."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    maps = []
    for i in range(n):
        h, w = rng.integers(5, 30), rng.integers(5, 30)
        present = rng.choice(np.arange(len(CLASSES) - 1), size=rng.integers(1, 4), replace=False)  # never 'boat'
        m = rng.choice(present, size=(h, w)).astype(np.uint8)
        m[rng.random((h, w)) < 0.1] = 255
        img = Image.fromarray(m, "L")
        if i % 2:
            img = img.convert("P")
            img.putpalette([v for k in range(256) for v in (k, 255 - k, k // 2)])
        img.save(folder / ("sub" if i % 3 == 0 else "") / f"lab{i:03d}.png")
        maps.append(m)
    (folder / "notes.txt").write_text("not a label")
    return maps
