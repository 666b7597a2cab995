"""A fine-tuning recipe that changes nothing, as a real Ray Train job: the command says its plan before
training, keeps the earliest of equally good validated checkpoints (not the last), publishes it, the
fit guard fires, and the repair table counts no image fixed or broken, against counts made here."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from finetune_world import CLASSES, scenes, world
from madmine import cli, tables
from madmine.models.registry import build_network, forward_logits
from madmine.steps.train.augment import eval_input
from madmine.workspace import Workspace

NOOP = """
lr_grid = [1e-9]
steps = 10
batch_size = 4
crop_size = 32
scale_range = [1.0, 1.0]
loader_workers = 0
"""


def failures_by_hand(spec, pairs) -> int:
    """Images on which the model's per-image mIoU (classes in its map or the label) is below 0.5, in numpy."""
    net = build_network(spec, len(CLASSES))
    count = 0
    with torch.inference_mode():
        for img, label in pairs:
            x = torch.from_numpy(eval_input(Image.fromarray(img), spec.input_size, spec.mean, spec.std))[None]
            logits = torch.nn.functional.interpolate(forward_logits(net, x), size=label.shape, mode="bilinear")
            pred = logits.argmax(1)[0].numpy()
            ious = [((pred == k) & (label == k)).sum() / ((pred == k) | (label == k)).sum()
                    for k in range(len(CLASSES)) if ((pred == k) | (label == k)).any()]
            count += int(np.mean(ious) < 0.5)
    return count


def test_a_recipe_that_changes_nothing_says_its_plan_trips_the_fit_guard_and_repairs_nothing(tmp_path, ray_train):
    cfg = world(tmp_path, n_s=8, n_s0=8, n_t0=6, finetune=NOOP)
    ws = Workspace.from_config(cfg)
    result = CliRunner().invoke(cli.app, ["--config", str(cfg.path), "finetune", "--round", "0", "--ray-address", ray_train])
    assert result.exit_code == 0, result.output + repr(result.exception)
    text = " ".join(result.output.split())
    # 8 + 8 images in one pool, batches of 4: 4 steps an epoch, the budget of 10 cuts the third at 2
    assert "10 steps of 4 images from S and S(0) shuffled together: 2.5 passes over S (8 images)" in text
    assert "batch norm frozen (the parent's statistics) (auto, 4 images per worker)" in text
    assert "did not fit S" in text and "[finetune] fit_guard = 0.5" in text

    s_failures = failures_by_hand(cfg.target, scenes(8, "shift", 3))
    t0_failures = failures_by_hand(cfg.target, scenes(6, "s0", 2))
    assert s_failures > 4, "the parent must fail on most of S for the guard to have something to say"
    rows = {r["set"]: r for r in tables.REPAIR.read_file(ws, part="finetune-target-round-0-mad").to_pylist()}
    assert set(rows) == {"S", "T(0)"}
    assert (rows["S"]["images"], rows["S"]["failures"], rows["S"]["fixed"], rows["S"]["broke"]) == (8, s_failures, 0, 0)
    assert (rows["T(0)"]["images"], rows["T(0)"]["failures"], rows["T(0)"]["fixed"], rows["T(0)"]["broke"]) == (
        6, t0_failures, 0, 0)
    assert f"repair on S: fixed 0 of {s_failures} failures" in text

    curve = tables.FINETUNE_CURVES.read_file(ws, round=0, selection="mad").to_pylist()
    assert [(r["epoch"], r["step"], r["kept"]) for r in curve] == [(0, 0, False), (1, 4, True), (2, 8, False),
                                                                   (3, 10, False)]
    assert all(r["s_failures"] == s_failures / 8 for r in curve)
    (row,) = tables.MODELS.read(ws).to_pylist()
    assert row["checkpoint_uri"].endswith("epoch-0003") and '"epoch": 1' in row["metrics"]
    published = torch.load(row["weights_uri"], weights_only=True)
    parent = torch.load(cfg.target.weights, weights_only=True)
    assert max(float((published[k].float() - parent[k].float()).abs().max()) for k in parent) < 1e-6
