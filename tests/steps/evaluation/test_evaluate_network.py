"""Evaluation and selection quality on a workspace made by a real `score` run (in-process
executor): cached maps, the network path with scoring's own preprocessing, a fine-tuned
version run from its weights, and the detectors' numbers against an independent computation."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

import evaluate_world as world
from configs import COLOUR, SEGNET, model, models, write_config
from madmine import tables
from madmine.config import load_config
from madmine.models.registry import build_network, model_version
from madmine.steps.evaluation import evaluate as ev
from madmine.steps.evaluation import quality
from madmine.steps.ingest import ingest
from madmine.steps.score.run import score
from madmine.workspace import Workspace
from references import brute_ap, brute_auroc
from worlds import stored_map, write_corpus

MODELS = models(
    model("target", "target", factory=SEGNET, input_size=64),
    model("colour", "competitor", factory=COLOUR, input_size=64),
)


def colour_truth(path) -> np.ndarray:
    """What the image shows: dark pixels background, else the strongest of R, G, B."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    label = (rgb.argmax(axis=2) + 1).astype(np.uint8)
    label[rgb.mean(axis=2) < 60] = 0
    return label


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("net")
    paths = write_corpus(root / "corpus", 16, seed=5)
    config = load_config(write_config(root, MODELS, scoring="shard_size = 8\nbatch_size = 4"))
    ws = Workspace.from_config(config)
    ingest(ws, [str(root / "corpus")], show_progress=False)
    result = score(config, executor="local", show_progress=False)
    manifest = tables.MANIFEST.read(ws).to_pylist()
    by_uri = {r["uri"]: r["image_id"] for r in manifest}
    labels = {by_uri[str(p)]: colour_truth(p) for p in paths}
    world.write_labels(ws, labels, 0)
    ids = sorted(labels)
    world.write_testset(ws, 0, ids[:8])
    return root, config, ws, result, labels, ids


def test_cached_maps_and_the_network_give_the_same_numbers(scored):
    root, config, ws, _, _, ids = scored
    version = model_version(config.target)
    weights = root / "finetuned.pt"
    torch.save(build_network(config.target, config.num_classes).state_dict(), weights)
    row = {"model": "target", "model_version": "ft-1", "role": "target", "arch": None, "weights_uri": str(weights),
           "parent_version": version, "created_at": world.T0, "round": 1}
    ws.write_parquet(tables.MODELS.path(ws, model="target", round=1, selection="mad"), pa.Table.from_pylist([row]))

    cached = ev.evaluate(config, ws, show_progress=False)
    labels = [r.label for r in cached.refs]
    assert labels == ["target@ft-1", f"target@{version}", f"colour@{model_version(config.model('colour'))}"]
    # the fine-tuned version ran from its weights (no scoring run knew it) and was cached
    assert stored_map(ws, "target", "ft-1", ids[0]) is not None
    first = {r.label: cached.cell(r, 0) for r in cached.refs}
    assert first["target@ft-1"].miou == first[f"target@{version}"].miou  # same weights, same maps
    assert first[labels[2]].miou > 0.8 > first[labels[1]].miou  # colour_net reads colours; a random net does not

    kept = ws.path("cache-kept")
    shutil.move(ws.path("cache"), kept)
    try:
        fresh = ev.evaluate(config, ws, show_progress=False)
    finally:
        shutil.rmtree(ws.path("cache"), ignore_errors=True)
        shutil.move(kept, ws.path("cache"))
    for ref in fresh.refs:
        a, b = cached.cell(ref, 0), fresh.cell(ref, 0)
        assert a.error is None and b.error is None
        np.testing.assert_array_equal(a.intersection, b.intersection)
        np.testing.assert_array_equal(a.union, b.union)
        assert a.miou == b.miou and a.per_image_miou == b.per_image_miou


def reference_image_miou(pred: np.ndarray, label: np.ndarray, c: int) -> float:
    ious = []
    for k in range(c):
        p, t = pred == k, label == k
        union = int((p | t).sum())
        if union:
            ious.append(int((p & t).sum()) / union)
    return sum(ious) / len(ious)


def test_selection_quality_against_an_independent_computation(scored):
    _, config, ws, result, labels, ids = scored
    version = model_version(config.target)
    per_image = {}
    for image_id in ids:
        m = stored_map(ws, "target", version, image_id)
        label = labels[image_id]
        pred = np.asarray(Image.fromarray(m, "L").resize(label.shape[::-1], Image.NEAREST))
        per_image[image_id] = reference_image_miou(pred, label, config.num_classes)
    tau = float(np.median(list(per_image.values())))
    failures = {i: v < tau for i, v in per_image.items()}
    assert 0 < sum(failures.values()) < len(ids)

    rows = {r.strategy: r for r in quality.selection_quality(config, ws, tau=tau, n=5)}
    assert set(rows) == {"mad", "entropy", "msp", "random"}
    preds = {r["image_id"]: r for r in tables.PREDICTIONS.read(ws, run_id=result.run_id).to_pylist() if r["role"] == "target"}
    pairs = {r["image_id"]: r["d"] for r in tables.PAIRS.read(ws, run_id=result.run_id).to_pylist()}
    expected_scores = {
        "mad": [pairs[i] for i in ids],
        "entropy": [preds[i]["mean_entropy"] for i in ids],
        "msp": [-preds[i]["mean_msp"] for i in ids],
        "random": [quality.random_score(0, i) for i in ids],
    }
    y = [failures[i] for i in ids]
    for strategy, scores in expected_scores.items():
        row = rows[strategy]
        assert row.pool == len(ids) and row.failures == sum(y) and row.tau == tau
        assert row.auroc == pytest.approx(brute_auroc(scores, y), abs=1e-12)
        assert row.aupr == pytest.approx(brute_ap(scores, y), abs=1e-12)
        top = sorted(range(len(ids)), key=lambda k: (-scores[k], ids[k]))[:5]
        assert row.precision_at_n == pytest.approx(sum(y[k] for k in top) / 5)
        assert row.base_rate == pytest.approx(sum(y) / len(y))
    assert not any(math.isnan(r.auroc) for r in rows.values())
    quality.save(ws, list(rows.values()))
    assert quality.load(ws).num_rows == 4
