"""A run with a target and three competitors of four different kinds, two of them on label sets
of their own mapped to the config's classes: score (in-process executor), bounds, select,
evaluate and compete all work, and every number agrees with what the models predict.

- target "seg": a Hugging Face SegFormer (random, the config's 4 classes, its processor's size);
- "perm": ColourNet over 6 classes in another order, exported to ONNX, a CSV class map;
- "fpn": an smp FPN with 6 classes, an inline class map by ids, two of its classes ignored;
- "colour": ColourNet traced to TorchScript, the config's classes.

"perm" and "colour" are the same network after mapping: every count, d, candidate and mIoU
of one must be the other's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate_world as world
import model_kinds as mk
from configs import model, write_config
from madmine import tables
from madmine.config import load_config
from madmine.models.registry import check_models
from madmine.steps.bounds import run_bounds
from madmine.steps.evaluation import compete as cp
from madmine.steps.evaluation import evaluate as ev
from madmine.steps.ingest import ingest
from madmine.steps.score.decode import decode_batch, pixels_column
from madmine.steps.score.run import score
from madmine.steps.select import run_select
from madmine.workspace import Workspace
from worlds import ColourNet, stored_map, true_mask, write_corpus, write_labelled

FPN_MAP = {"5": "background", "0": "red", "2": "green", "3": "blue"}  # 1 and 4: ignored


def models(root) -> str:
    mk.save_segformer(root / "seg", 4, size=32, seed=11)
    mk.save_onnx(root / "perm.onnx", mk.PermutedColourNet())
    mk.permuted_csv(root / "perm.csv")
    mk.save_smp(root / "fpn.pt", 6, seed=12)
    mk.save_torchscript(root / "colour.pt", mk.Logits(ColourNet()))
    table = "{ " + ", ".join(f'"{k}" = "{v}"' for k, v in FPN_MAP.items()) + " }"
    return (
        model("seg", "target", 'hf = "seg"')
        + model("perm", "competitor", 'onnx = "perm.onnx"\nclass_map = "perm.csv"\ninput_size = 32')
        + model("fpn", "competitor", f'smp = "{mk.SMP_ARCH}"\nencoder = "{mk.SMP_ENCODER}"\nweights = "fpn.pt"\n'
                         f"classes = 6\ninput_size = 48\nclass_map = {table}")
        + model("colour", "competitor", 'torchscript = "colour.pt"\ninput_size = 32')
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    paths = write_corpus(root / "corpus", 12, seed=21)
    _, s0_labels = write_labelled(root / "s0", 8, seed=22)
    config = load_config(write_config(root, models(root), scoring='shard_size = 6\nbatch_size = 4\nprecision = "fp32"'))
    ws = Workspace.from_config(config)
    ingest(ws, [str(root / "corpus")], show_progress=False)
    result = score(config, executor="local", show_progress=False)
    return root, config, ws, result, paths, s0_labels


def test_scoring_maps_every_kind_to_the_config_classes(run):
    root, config, ws, result, paths, _ = run
    assert result.errors == 0 and result.images_scored == 12
    versions = check_models(config)
    assert versions["seg"].startswith("hf-") and versions["colour"].startswith("torchscript-")
    assert versions["perm"].startswith("onnx-") and "-cm" in versions["perm"]
    assert versions["fpn"].startswith(f"smp.{mk.SMP_ARCH}.{mk.SMP_ENCODER}-") and "-cm" in versions["fpn"]

    preds = tables.PREDICTIONS.read(ws, run_id=result.run_id).to_pylist()
    by = {(r["model"], r["image_id"]): r for r in preds}
    ids = sorted({r["image_id"] for r in preds})
    assert len(ids) == 12
    for i in ids:  # the ONNX model on its own label set, mapped, is ColourNet
        assert by[("perm", i)]["class_pixels"] == by[("colour", i)]["class_pixels"]
        assert sum(by[("colour", i)]["class_pixels"]) == 32 * 32
    pairs = {(r["competitor"], r["image_id"]): r for r in tables.PAIRS.read(ws, run_id=result.run_id).to_pylist()}
    for i in ids:
        assert pairs[("perm", i)]["d"] == pairs[("colour", i)]["d"]
        assert pairs[("perm", i)]["intersection"] == pairs[("colour", i)]["intersection"]

    # the smp model: its stored maps are its argmax through the inline map, 255 where it predicts classes 1 or 4
    lut = np.full(6, 255, np.uint8)
    for k, v in FPN_MAP.items():
        lut[int(k)] = config.classes.index(v)
    net = mk.smp_model(6)
    net.load_state_dict(torch.load(root / "fpn.pt"))
    manifest = tables.MANIFEST.read(ws).to_pylist()
    batch = decode_batch({"image_id": np.array([r["image_id"] for r in manifest], dtype=object),
                          "uri": np.array([r["uri"] for r in manifest], dtype=object),
                          "shard": np.array(["x"] * len(manifest), dtype=object)}, sizes=(48,))
    x = torch.from_numpy(batch[pixels_column(48)]).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        raw = torch.nn.functional.pad(x, (0, 16, 0, 16))  # 48 -> 64, a multiple of the encoder's stride
        expected = lut[net(raw)[..., :48, :48].argmax(1).numpy()]
    ignored = 0
    for k, r in enumerate(manifest):
        got = stored_map(ws, "fpn", versions["fpn"], r["image_id"])
        np.testing.assert_array_equal(got, expected[k])
        ignored += int((got == 255).sum())
        assert sum(by[("fpn", r["image_id"])]["class_pixels"]) == int((got != 255).sum())  # 255 is never counted
    assert ignored > 0  # the test sees the ignored classes at work


def test_bounds_select_evaluate_and_compete_with_every_kind(run):
    root, config, ws, result, paths, s0_labels = run
    run_bounds(config, str(s0_labels))
    selected = run_select(config, 0, n3=3).table.to_pylist()
    competitors = {r["competitor"] for r in selected}
    assert competitors == {"perm", "fpn", "colour"}

    def rows_of(name):
        return sorted((r["image_id"], r["direction"], r["class_id"], r["d"], r["rank"]) for r in selected if r["competitor"] == name)

    assert rows_of("perm") == rows_of("colour")  # same maps after mapping: same groups, same ranks

    by_uri = {r["uri"]: r["image_id"] for r in tables.MANIFEST.read(ws).to_pylist()}
    labels = {by_uri[str(p)]: true_mask(np.asarray(Image.open(p).convert("RGB"))) for p in paths}
    world.write_labels(ws, labels, 0)
    ids = sorted(labels)
    world.write_testset(ws, 0, ids[:6])
    evaluation = ev.evaluate(config, ws, show_progress=False)
    cells = {r.name: evaluation.cell(r, 0) for r in evaluation.refs}
    assert set(cells) == {"seg", "perm", "fpn", "colour"} and all(c.error is None for c in cells.values())
    np.testing.assert_array_equal(cells["perm"].intersection, cells["colour"].intersection)
    assert cells["perm"].miou == cells["colour"].miou > 0.8 > cells["seg"].miou  # ColourNet reads colours; random nets do not

    versus = cp.compete(config, ws, "seg", "perm", n=4, protocol="d-ranking")  # the ranking that equals scoring's d
    pair_d = {r["image_id"]: r["d"] for r in tables.PAIRS.read(ws, run_id=result.run_id).to_pylist() if r["competitor"] == "perm"}
    top = sorted(pair_d, key=lambda i: (-pair_d[i], i))[:4]
    assert [r["image_id"] for r in versus.selection] == top  # d of the competition = d of scoring (both 32x32)
    for r in versus.selection:
        assert r["d"] == pytest.approx(pair_d[r["image_id"]])
    assert versus.winner == versus.b.label  # ColourNet beats a random SegFormer on labelled images
