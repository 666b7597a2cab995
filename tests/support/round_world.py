"""The round tests' world (this module holds no tests): a tiny network target, two competitors,
S(0) and T(0) folders, tiny schedules, and a simulated rater who scores each candidate by the
target's true IoU on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from configs import COLOUR, DILATED, SEGNET, model, models, write_config
from madmine import metrics
from madmine.config import load_config
from madmine.steps.rating import store
from madmine.steps.rating.roundset import load_round
from madmine.workspace import Workspace
from worlds import true_mask, write_labelled

MODELS = models(
    model("target", "target", factory=SEGNET, input_size=32),
    model("colour", "competitor", factory=COLOUR, input_size=32),
    model("dilated", "competitor", factory=DILATED, input_size=32),
)


def round_config(root: Path, models: str = MODELS):
    s0_images, s0_labels = write_labelled(root / "s0", 6, seed=41)
    t0_images, t0_labels = write_labelled(root / "t0", 4, seed=42)
    extra = f"""
[selection]
n3 = 3
n4 = 4

[evaluate]
testset_size = 3
per_class = 4

[finetune]
s0_images = "{s0_images}"
s0_labels = "{s0_labels}"
t0_images = "{t0_images}"
t0_labels = "{t0_labels}"
epochs = 1
lr_grid = [0.001]
batch_size = 2
crop_size = 32
loader_workers = 0
"""
    return load_config(write_config(root, models, scoring="shard_size = 6", extra=extra)), s0_labels


def rate_everything(ws: Workspace, cfg, round_: int) -> None:
    """One simulated rater: the score follows the target's true IoU on the image."""
    rs = load_round(ws, cfg, round_)
    for image_id, uri in rs.uris.items():
        predicted = rs.load_map(rs.target, image_id)
        rgb = np.asarray(Image.open(uri).convert("RGB").resize(predicted.shape[::-1], Image.NEAREST))
        conf = metrics.confusion(predicted, true_mask(rgb), cfg.num_classes)
        store.record(ws, round_, image_id, "sim", int(np.clip(1 + 4 * metrics.dataset_miou(conf), 1, 5)))
