"""Builders for the evaluation tests (this module holds no tests): a round's workspace written
directly through madmine's Workspace, so that test sets, evaluation, competitions and the
report are tested without running selection, rating or fine-tuning.

Every image has a known label; the target and the competitor are maps folders whose maps
are the label, damaged by an amount that varies with the image, at their own resolutions
(16x32 and 16x16, so comparing at the label's size needs a resize). Label sizes are whole
multiples of the map sizes, where nearest-neighbour resizing has no rounding ties and any
correct implementation agrees with PIL's.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

import configs
from configs import model, models
from madmine import metrics, tables
from madmine.completion import shard_markers
from madmine.config import Config, load_config
from madmine.images import encode_map_png
from madmine.models.registry import model_version
from madmine.tables import MANIFEST as MANIFEST_TABLE
from madmine.workspace import Workspace
from worlds import store_maps

CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow"]
TARGET, COMPETITOR = "target", "fcn"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TARGET_SHAPE = {False: (16, 32), True: (48, 64)}
COMPETITOR_SHAPE = {False: (16, 16), True: (40, 40)}


@dataclass
class EvalWorld:
    root: Path
    config_path: Path
    config: Config
    ws: Workspace
    round: int
    ids: list[str]
    uris: dict[str, str]
    labels: dict[str, np.ndarray]
    target_maps: dict[str, np.ndarray]
    competitor_maps: dict[str, np.ndarray]
    main_class: dict[str, int]
    versions: dict[str, str]


def nearest(label_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize by pixel centres, written out (independent of PIL)."""
    h, w = label_map.shape
    ys = np.floor((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(int)
    xs = np.floor((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(int)
    return label_map[ys][:, xs]


def scene(k: int, height: int, width: int) -> tuple[Image.Image, np.ndarray, int]:
    """(picture, label, main class): sky, ground, one large object of the main class and a smaller one."""
    main = 1 + k % (len(CLASSES) - 1)
    other = 1 + (k * 7 + 3) % (len(CLASSES) - 1)
    sky = np.linspace([90, 150, 230], [200, 225, 250], height).astype(np.uint8)
    pixels = np.repeat(sky[:, None, :], width, axis=1)
    pixels[int(height * 0.7) :] = (95, 140, 70)
    img = Image.fromarray(pixels, "RGB")
    label = Image.new("L", (width, height), 0)
    draw, paint = ImageDraw.Draw(img), ImageDraw.Draw(label)
    x0, y0 = int(width * (0.1 + 0.03 * (k % 5))), int(height * 0.2)
    big_box = (x0, y0, x0 + int(width * 0.45), y0 + int(height * 0.5))
    small_box = (int(width * 0.7), int(height * 0.55), int(width * 0.9), int(height * 0.8))
    palette = [(0, 0, 0), (200, 60, 60), (60, 160, 60), (150, 110, 50), (40, 90, 200), (230, 200, 40),
               (210, 120, 30), (120, 120, 130), (170, 80, 160), (90, 60, 40), (240, 240, 240)]
    draw.ellipse(big_box, fill=palette[main], outline=(30, 30, 30))
    paint.ellipse(big_box, fill=main)
    draw.rectangle(small_box, fill=palette[other])
    paint.rectangle(small_box, fill=other)
    labels = np.asarray(label, dtype=np.uint8).copy()
    labels[:, :1] = metrics.IGNORE  # a void border, as VOC labels have
    return img, labels, main


def damage(label: np.ndarray, shape: tuple[int, int], k: int, strength: float, seed: int) -> np.ndarray:
    """The label at a model's resolution, shifted and with random blocks of wrong classes."""
    rng = np.random.default_rng(seed * 1000 + k)
    m = nearest(np.where(label == metrics.IGNORE, 0, label).astype(np.uint8), shape)
    m = np.roll(m, int(round(strength * shape[1] / 4)), axis=1)
    for _ in range(int(strength * 6)):
        y, x = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        m[y : y + 5, x : x + 5] = rng.integers(0, len(CLASSES))
    return m


def write_config(root: Path, extra: str = "", workspace_uri: str = "work/", min_raters: int | None = 1) -> Path:
    """min_raters None leaves the key out: every registered rater must vote, madmine's default."""
    raters = "" if min_raters is None else f"min_raters = {min_raters}"
    entries = models(model(TARGET, "target", maps="preds/target/"), model(COMPETITOR, "competitor", maps="preds/fcn/"))
    return configs.write_config(root, entries, workspace=workspace_uri, classes=CLASSES,
                                extra=f"[rating]\n{raters}\n{extra}")


def build(root: Path, n: int = 80, *, round_: int = 1, big: bool = False, labelled=None, extra_toml: str = "",
          workspace_uri: str = "work/", min_raters: int | None = 1) -> EvalWorld:
    """n images in round `round_`'s MAD candidates, rated, with S(round) and S(round - 1) chosen
    and every image labelled (or those `labelled(k)` accepts)."""
    for sub in ("corpus", "preds/target", "preds/fcn"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    images, labels, tmaps, cmaps, mains, uris, ids = {}, {}, {}, {}, {}, {}, []
    for k in range(n):
        height, width = (240, 320) if big else [(48, 64), (64, 64), (32, 64)][k % 3]
        img, label, main = scene(k, height, width)
        image_id = f"{k:04d}" + "e" * 28
        path = root / "corpus" / f"img{k:04d}.png"
        img.save(path)
        target_map = damage(label, TARGET_SHAPE[big], k, (k % 4) / 3, seed=1)
        competitor_map = damage(label, COMPETITOR_SHAPE[big], k, ((k + 2) % 4) / 3, seed=2)
        Image.fromarray(target_map, "L").save(root / "preds" / "target" / f"img{k:04d}.png")
        Image.fromarray(competitor_map, "L").save(root / "preds" / "fcn" / f"img{k:04d}.png")
        ids.append(image_id)
        images[image_id], labels[image_id], mains[image_id] = path, label, main
        tmaps[image_id], cmaps[image_id], uris[image_id] = target_map, competitor_map, str(path)
    config_path = write_config(root, extra_toml, workspace_uri, min_raters)
    config = load_config(config_path)
    ws = Workspace.from_config(config)
    versions = {m.name: model_version(m) for m in config.models}
    manifest = [
        {"image_id": i, "uri": uris[i], "bytes": images[i].stat().st_size, "width": labels[i].shape[1],
         "height": labels[i].shape[0], "phash": k, "ingested_at": T0}
        for k, i in enumerate(ids)
    ]
    ws.write_parquet(tables.MANIFEST.path(ws, part="part-0"), pa.Table.from_pylist(manifest, schema=MANIFEST_TABLE.schema))
    store_maps(ws, TARGET, versions[TARGET], tmaps)
    store_maps(ws, COMPETITOR, versions[COMPETITOR], cmaps)
    ws.put_json(
        ws.path("runs", "run-1", "run.json"),
        {"run_id": "run-1", "status": "complete", "created_at": T0.isoformat(),
         "models": [{"name": TARGET, "role": "target", "version": versions[TARGET]},
                    {"name": COMPETITOR, "role": "competitor", "version": versions[COMPETITOR]}]},
    )
    write_candidates(ws, round_, ids, uris, tmaps, cmaps, mains)
    write_ratings(ws, round_, ids)
    write_selected(ws, round_, [i for k, i in enumerate(ids) if k % 7 == 0])
    write_selected(ws, round_ - 1, [i for k, i in enumerate(ids) if k % 11 == 3])
    accept = labelled or (lambda k: True)
    write_labels(ws, {i: labels[i] for k, i in enumerate(ids) if accept(k)}, round_)
    return EvalWorld(root, config_path, config, ws, round_, ids, uris, labels, tmaps, cmaps, mains, versions)


def write_candidates(ws, round_, ids, uris, tmaps, cmaps, mains) -> None:
    """One row per image for its main class, and for every fourth image a second row of
    another class with a smaller fraction (so the main class is the largest fraction's)."""
    rows = []
    for k, image_id in enumerate(ids):
        t = tmaps[image_id]
        d = metrics.pair_summary(t, nearest(cmaps[image_id], t.shape), len(CLASSES))[2]
        main = mains[image_id]
        rows.append({"round": round_, "run_id": "run-1", "strategy": "mad", "image_id": image_id, "uri": uris[image_id],
                     "competitor": COMPETITOR, "direction": "target", "class_id": main, "class_fraction": 0.30, "d": d,
                     "rank": 1})
        if k % 4 == 0:
            other = 1 + (main % (len(CLASSES) - 1))
            rows.append({"round": round_, "run_id": "run-1", "strategy": "mad", "image_id": image_id,
                         "uri": uris[image_id], "competitor": COMPETITOR, "direction": "competitor", "class_id": other,
                         "class_fraction": 0.12, "d": d, "rank": 2})
    ws.write_parquet(tables.CANDIDATES.path(ws, round=round_, strategy="mad"), pa.Table.from_pylist(rows))


def ood_image(k: int) -> bool:
    return k % 9 == 4


def write_ratings(ws, round_, ids, raters=("ann", "bob")) -> None:
    """Two raters per image; bob marks every image with ood_image(k) out of domain."""
    rows = []
    for k, image_id in enumerate(ids):
        for j, rater in enumerate(raters):
            score = None if (rater == "bob" and ood_image(k)) else 1 + (k + j) % 5
            rows.append({"round": round_, "image_id": image_id, "rater": rater, "score": score,
                         "created_at": T0 + timedelta(seconds=10 * k + j)})
    schema = pa.schema([("round", pa.int32()), ("image_id", pa.string()), ("rater", pa.string()),
                        ("score", pa.int8()), ("created_at", pa.timestamp("us", tz="UTC"))])
    ws.write_parquet(tables.RATINGS.path(ws, round=round_), pa.Table.from_pylist(rows, schema=schema))


def write_selected(ws, round_, image_ids) -> None:
    rows = [{"round": round_, "image_id": i, "uri": "", "mos": 1.0, "n_ratings": 2, "rank": k + 1}
            for k, i in enumerate(image_ids)]
    ws.write_parquet(tables.SELECTED.path(ws, round=round_, strategy="mad"), pa.Table.from_pylist(rows))


def write_labels(ws, masks: dict[str, np.ndarray], round_: int | None, source: str = "coco") -> None:
    rows = []
    for image_id, mask in sorted(masks.items()):
        path = ws.path("labels", f"{image_id}.png")
        ws.put_bytes(path, encode_map_png(mask))
        rows.append({"image_id": image_id, "mask_uri": ws.url(path), "source": source, "round": round_, "created_at": T0})
    schema = pa.schema([("image_id", pa.string()), ("mask_uri", pa.string()), ("source", pa.string()),
                        ("round", pa.int32()), ("created_at", pa.timestamp("us", tz="UTC"))])
    ws.write_parquet(tables.LABELS.path(ws, part=f"{source}-{len(rows)}"), pa.Table.from_pylist(rows, schema=schema))


def write_testset(ws, round_: int, image_ids: list[str]) -> None:
    """A test set written by hand (T(0), the held-out set, is not drawn from candidates)."""
    rows = [{"round": round_, "image_id": i, "position": k + 1} for k, i in enumerate(image_ids)]
    schema = pa.schema([("round", pa.int32()), ("image_id", pa.string()), ("position", pa.int32())])
    ws.write_parquet(tables.TESTSETS.path(ws, round=round_), pa.Table.from_pylist(rows, schema=schema))


def add_model_version(ws, name: str, version: str, maps: dict[str, np.ndarray], round_: int, created: datetime) -> None:
    """A fine-tuned version known only by its cached maps and its models-table row."""
    store_maps(ws, name, version, maps)
    row = {"model": name, "model_version": version, "role": "target", "arch": None, "weights_uri": None,
           "parent_version": None, "created_at": created, "round": round_}
    ws.write_parquet(tables.MODELS.path(ws, model=name, round=round_, selection="mad"), pa.Table.from_pylist([row]))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def write_scores(w: EvalWorld, run_id: str = "run-1") -> None:
    """The committed predictions and pairs of the world's scoring run: d between the maps, and
    an entropy that grows with how damaged the target's map is (so detectors can be told apart)."""
    from madmine.tables import PAIRS as PAIRS_TABLE
    from madmine.tables import PREDICTIONS as PREDICTIONS_TABLE

    preds, pairs = [], []
    for k, image_id in enumerate(w.ids):
        t, c = w.target_maps[image_id], w.competitor_maps[image_id]
        inter, union, d = metrics.pair_summary(t, nearest(c, t.shape), len(CLASSES))
        entropy = (k % 4) / 3 + 0.1 * ((k * 37) % 10) / 10
        for name, role, m in ((TARGET, "target", t), (COMPETITOR, "competitor", c)):
            preds.append({"run_id": run_id, "image_id": image_id, "model": name, "model_version": w.versions[name],
                          "role": role, "height": m.shape[0], "width": m.shape[1],
                          "class_pixels": metrics.class_pixels(m, len(CLASSES)).tolist(),
                          "mean_entropy": entropy if role == "target" else None,
                          "mean_msp": 1 - entropy / 2 if role == "target" else None})
        pairs.append({"run_id": run_id, "image_id": image_id, "target_version": w.versions[TARGET], "competitor": COMPETITOR,
                      "competitor_version": w.versions[COMPETITOR], "intersection": inter.tolist(), "union": union.tolist(), "d": d})
    w.ws.write_parquet(tables.PREDICTIONS.path(w.ws, run_id=run_id, shard="part-0-00000"), pa.Table.from_pylist(preds, schema=PREDICTIONS_TABLE.schema))
    w.ws.write_parquet(tables.PAIRS.path(w.ws, run_id=run_id, shard="part-0-00000"), pa.Table.from_pylist(pairs, schema=PAIRS_TABLE.schema))
    w.ws.put_json(shard_markers(w.ws, run_id).path("part-0-00000"), {"shard": "part-0-00000", "images": len(w.ids), "errors": 0})


def write_finetune_curves(ws: Workspace, round_: int) -> None:
    """The curves a fine-tuning run of three learning rates leaves (tables/finetune_curves)."""
    rows = []
    for trial, lr in enumerate((1e-5, 5e-5, 1e-4)):
        for epoch in range(1, 11):
            validated = epoch % 2 == 0  # validation every second epoch: no mIoU in between
            rows.append({"round": round_, "trial": f"lr-{trial}", "lr": lr, "epoch": epoch,
                         "train_loss": 1.2 * np.exp(-epoch * lr * 3e4) + 0.1,
                         "val_miou": 0.45 + 0.3 * (1 - np.exp(-epoch * lr * 2e4)) if validated else None})
    ws.write_parquet(tables.FINETUNE_CURVES.path(ws, round=round_, selection="mad"), pa.Table.from_pylist(rows))


def full_round(root: Path, n: int = 40, big: bool = False) -> EvalWorld:
    """A round with every table the report reads: T(0) by hand and T(1) drawn, a fine-tuned
    version, a saved evaluation, selection quality, a competition and fine-tuning curves."""
    from madmine.steps.evaluation import compete, quality, testset
    from madmine.steps.evaluation import evaluate as ev

    w = build(root, n=n, big=big, labelled=lambda k: k % 13 != 6)
    write_scores(w)
    write_testset(w.ws, 0, [w.ids[k] for k in range(1, n, 5)])
    testset.build(w.config, w.ws, w.round, size=min(30, n // 2), after_s=True)  # the world chose S first
    better = {i: damage(w.labels[i], TARGET_SHAPE[big], 0, 0.35, seed=4) for i in w.ids}
    add_model_version(w.ws, TARGET, "ft-r1", better, w.round, T0 + timedelta(days=1))
    ev.save(w.ws, ev.evaluate(w.config, w.ws, show_progress=False))
    quality.save(w.ws, quality.selection_quality(w.config, w.ws))
    compete.compete(w.config, w.ws, f"{TARGET}@ft-r1", TARGET, n=10, protocol="d-ranking")
    write_finetune_curves(w.ws, w.round)
    return w
