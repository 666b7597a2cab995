"""The round tests' world (this module holds no tests): a tiny network target, two competitors,
S(0) and T(0) folders, tiny schedules, and a simulated rater who scores each candidate by the
target's true IoU on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from madmine import metrics
from madmine.config import load_config
from madmine.steps.rating import store
from madmine.steps.rating.roundset import load_round
from madmine.workspace import Workspace
from worlds import true_mask, write_config, write_labelled

MODELS = """
[[models]]
name = "target"
role = "target"
factory = "madmine.models.tiny:tiny_segnet"
input_size = 32

[[models]]
name = "colour"
role = "competitor"
factory = "worlds:colour_net"
input_size = 32

[[models]]
name = "dilated"
role = "competitor"
factory = "madmine.models.tiny:tiny_dilated"
input_size = 32
"""


def round_config(root: Path, models: str = MODELS):
    s0_images, s0_labels = write_labelled(root / "s0", 6, seed=41)
    t0_images, t0_labels = write_labelled(root / "t0", 4, seed=42)
    extra = f"""
[selection]
n3 = 3
n4 = 4

[evaluate]
testset_size = 4
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
