"""Fine-tuning a Hugging Face target as a real Ray Train job on the session cluster.

The target is a tiny SegFormer pretrained here on the S(0)-like scenes, over the config's
classes in an order of its own (id2label), mapped back by name with an inline class map. The
job must train the library model itself (its own state_dict is what the weights file holds),
learn through the class map, report the T(0) mIoU that transformers computes for the new
weights, fix part of the failures, and publish a version that scoring finds.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

import model_kinds as mk
from finetune_world import CLASSES, SIZE, _inputs, add_round, scenes, write_config, write_pairs
from madmine import cli, tables
from madmine.config import load_config
from madmine.metrics import confusion, dataset_miou
from madmine.models.registry import model_version
from madmine.steps.ingest import ingest
from madmine.steps.score.run import score
from madmine.steps.train.augment import eval_input
from madmine.steps.train.versions import with_latest_target
from madmine.workspace import Workspace

OWN_ORDER = ["blue", "background", "red", "green"]  # the checkpoint's id2label
TO_MODEL = torch.tensor([OWN_ORDER.index(c) for c in CLASSES])  # config class -> model class
TO_CONFIG = np.array([CLASSES.index(c) for c in OWN_ORDER], np.uint8)  # model class -> config class
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # SegformerImageProcessor's, on pixels in [0, 1]
FINETUNE = """
lr_grid = [0.05]
epochs = 6
crop_size = 32
loader_workers = 0
max_failures = 1
"""


def _upsampled(net, x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(net(pixel_values=x).logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


@functools.lru_cache(maxsize=1)
def pretrained_segformer(steps: int = 120) -> dict:
    """A tiny SegFormer's state_dict trained (Adam, one thread) on 48 S(0)-like scenes, in its own label order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = mk.segformer(4, dict(enumerate(OWN_ORDER)), seed=0).train()
        x, y = _inputs(scenes(48, "s0", 100))
        y = TO_MODEL[y]
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        gen = torch.Generator().manual_seed(0)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (8,), generator=gen)
            loss = F.cross_entropy(_upsampled(net, x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {k: v.detach().clone() for k, v in net.eval().state_dict().items()}
    finally:
        torch.set_num_threads(threads)


def transformers_miou(folder, weights, pairs) -> float:
    """Dataset mIoU computed with transformers directly: the checkpoint, a state_dict, the scoring input."""
    from transformers import SegformerForSemanticSegmentation

    net = SegformerForSemanticSegmentation.from_pretrained(folder).eval()
    net.load_state_dict(weights)
    conf = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a one-CPU Ray worker computes
    try:
        with torch.inference_mode():
            for img, label in pairs:
                x = torch.from_numpy(eval_input(Image.fromarray(img), SIZE, MEAN, STD))[None]
                logits = F.interpolate(_upsampled(net, x), size=label.shape, mode="bilinear", align_corners=False)
                conf += confusion(label, TO_CONFIG[logits.argmax(1)[0].numpy()], len(CLASSES))
    finally:
        torch.set_num_threads(threads)
    return dataset_miou(conf)


@pytest.mark.timeout(1800)
def test_an_hf_target_on_its_own_label_order_is_fine_tuned_through_its_class_map(tmp_path, ray_train):
    folder = mk.save_segformer(tmp_path / "seg", 4, size=SIZE, id2label=dict(enumerate(OWN_ORDER)))
    from transformers import SegformerForSemanticSegmentation

    net = SegformerForSemanticSegmentation.from_pretrained(folder)
    net.load_state_dict(pretrained_segformer())
    net.save_pretrained(folder)  # the pretrained checkpoint is the config's hf folder
    write_pairs(tmp_path / "s0", scenes(8, "s0", 1), "a")
    t0 = scenes(6, "s0", 2)
    write_pairs(tmp_path / "t0", t0, "t")
    mapping = "{ " + ", ".join(f'"{c}" = "{c}"' for c in OWN_ORDER) + " }"
    cfg = load_config(write_config(tmp_path, workspace="work/", finetune=FINETUNE,
                                   target=f'hf = "seg"\nclass_map = {mapping}'))
    ws = Workspace.from_config(cfg)
    add_round(ws, 0, scenes(8, "shift", 3), tmp_path / "corpus")

    result = CliRunner().invoke(cli.app, ["--config", str(cfg.path), "finetune", "--round", "0"])
    assert result.exit_code == 0, result.output + repr(result.exception)

    (row,) = tables.MODELS.read(ws).to_pylist()
    new_spec = dataclasses.replace(cfg.target, weights=row["weights_uri"])
    assert row["parent_version"] == model_version(cfg.target, None, cfg.classes) != row["model_version"]
    assert row["model_version"] == model_version(new_spec, None, cfg.classes) and row["model_version"].startswith("hf-")
    weights = torch.load(row["weights_uri"], weights_only=True)
    parent = pretrained_segformer()
    assert set(weights) == set(parent)  # SegFormer's own state_dict: from_pretrained + load_state_dict read it
    assert any(not torch.equal(weights[k], parent[k]) for k in parent)

    curve = sorted((r for r in ws.read_parquet([tables.FINETUNE_CURVES.path(ws, round=0, selection="mad")]).to_pylist()),
                   key=lambda r: r["epoch"])
    assert [r["epoch"] for r in curve] == list(range(7))
    assert curve[0]["val_miou"] == pytest.approx(transformers_miou(folder, parent, t0), abs=1e-9)
    (kept,) = [r for r in curve if r["kept"]]  # the best validated epoch is published, not merely the last
    assert kept["val_miou"] == max(r["val_miou"] for r in curve[1:])
    assert row["val_miou"] == kept["val_miou"] == pytest.approx(transformers_miou(folder, weights, t0), abs=1e-9)

    shifted = scenes(16, "shift", 51)  # held out, from the failures' distribution
    before, after = transformers_miou(folder, parent, shifted), transformers_miou(folder, weights, shifted)
    print(f"SegFormer mIoU on held-out shifted scenes: {before:.3f} -> {after:.3f}")
    assert after > before + 0.05, "fine-tuning through the class map did not learn the failures"

    # the new version is what scoring runs next; the competitor comes from its cache
    write_pairs(tmp_path / "fresh", scenes(4, "shift", 77), "f")
    ingest(ws, [str(tmp_path / "fresh" / "images")], show_progress=False)
    assert score(cfg, executor="local", show_progress=False).forwarded == {"target": 4, "other": 4}
    latest = with_latest_target(cfg, ws, before_round=1)
    assert latest.target.weights == row["weights_uri"] and latest.target.hf == cfg.target.hf
    assert score(latest, executor="local", show_progress=False).forwarded == {"target": 4, "other": 0}
