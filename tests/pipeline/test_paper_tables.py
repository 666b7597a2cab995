"""The paper's Tables 1 and 2 on a small world, through the commands alone: MAD and an entropy
baseline each select, choose S, get labels and fine-tune under their own names in one
workspace; T(1) is exported blank and labelled by a simulated annotator; `evaluate` gives
Table 1 and `compete target@mad target@entropy` (the MAD competition, with a rater's veto)
Table 2. Every mIoU is checked against a confusion matrix counted here from the maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from annotator import label_export
from configs import CLASSES
from madmine import tables
from madmine.cli import app
from madmine.cli import state as cli_state
from madmine.steps.evaluation.compete import rating_key
from madmine.steps.rating import store
from madmine.workspace import Workspace
from round_world import MODELS, rate_everything, round_config
from worlds import stored_map, true_mask, write_corpus

C = len(CLASSES)
# a target that fails where it sees green (and learns), against the exact colour reader
TARGET = MODELS.replace("madmine.models.tiny:tiny_segnet", "worlds:confused_colour_net")


@pytest.fixture
def madmine(tmp_path):
    config = tmp_path / "madmine.toml"

    def run(*args: str) -> str:
        result = CliRunner().invoke(app, ["--config", str(config), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    yield run
    cli_state.set_config_path("madmine.toml")


def dataset_miou(ws: Workspace, version: str, truth: dict[str, np.ndarray], ids: list[str]) -> float:
    """One confusion matrix over the images (the map resized to the label, 255 skipped), IoU per
    class where the union is not empty, averaged."""
    conf = np.zeros((C, C), dtype=np.int64)
    for image_id in ids:
        label = truth[image_id]
        pred = np.asarray(Image.fromarray(stored_map(ws, "target", version, image_id)).resize(label.shape[::-1], Image.NEAREST))
        valid = (label != 255) & (pred != 255)
        conf += np.bincount(label[valid].astype(int) * C + pred[valid], minlength=C * C).reshape(C, C)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    return float(np.mean(inter[union > 0] / union[union > 0]))


def test_tables_1_and_2_through_the_commands(tmp_path, ray_train, madmine):
    write_corpus(tmp_path / "corpus", 24, seed=45)
    cfg, s0_labels = round_config(tmp_path, TARGET)
    ws = Workspace.from_config(cfg)
    madmine("ingest", str(tmp_path / "corpus"))
    uris = {r["image_id"]: r["uri"] for r in tables.MANIFEST.read(ws).to_pylist()}
    truth = {i: true_mask(np.asarray(Image.open(u).convert("RGB"))) for i, u in uris.items()}
    madmine("score", "--ray-address", ray_train)
    madmine("bounds", str(s0_labels))

    # round 0, twice: MAD (rated) and the entropy baseline with the same budget (its own ranking)
    madmine("select", "--round", "0")
    madmine("select", "--round", "0", "--strategy", "entropy")
    rate_everything(ws, cfg, 0)
    # T(1) from M(0) before any S of round 0 (blank masks, drawn from scratch), then each strategy's S from the rest
    assert "T(1)" in madmine("testset", "--round", "0")
    madmine("rate", "select", "--round", "0")
    madmine("rate", "select", "--round", "0", "--strategy", "entropy")
    s = {}
    for strategy in ("mad", "entropy"):
        folder = tmp_path / f"s1-{strategy}"
        madmine("annotate", "export", "--round", "0", "--set", "s", "--strategy", strategy, "--format", "coco",
                "--out", str(folder))
        s[strategy] = set(label_export(ws, cfg, folder, truth.__getitem__))
        madmine("finetune", "--round", "0", "--selection", strategy, "--ray-address", ray_train)
    versions = {r["selection"]: r["model_version"] for r in tables.MODELS.read(ws).to_pylist()}
    assert set(versions) == {"mad", "entropy"} and versions["mad"] != versions["entropy"]

    # T(1)'s labels; Table 1
    madmine("annotate", "export", "--round", "0", "--set", "test", "--format", "coco", "--out", str(tmp_path / "t1"))
    assert json.loads((tmp_path / "t1" / "annotations.json").read_text())["annotations"] == []
    t1 = label_export(ws, cfg, tmp_path / "t1", truth.__getitem__)
    assert t1 and not set(t1) & (s["mad"] | s["entropy"])
    madmine("evaluate")
    rows = {(r["model_version"], r["testset"]): r for r in tables.EVALUATION.read(ws).to_pylist() if r["model"] == "target"}
    for selection, version in versions.items():
        assert rows[(version, "T(0)")]["n_labelled"] == 4
        row = rows[(version, "T(1)")]
        assert row["n_labelled"] == len(t1) and row["trained_on"] == f"S(0) + S(1) ({selection})"
        assert row["miou"] == pytest.approx(dataset_miou(ws, version, truth, t1))

    # Table 2: the MAD competition between the two fine-tuned targets, a rater vetoes one image
    madmine("rate", "add-rater", "ann")
    text = madmine("compete", "target@mad", "target@entropy")
    (cid,) = [(tables.COMPETITIONS.keys_of(p) or {})["competition"] for p in tables.COMPETITIONS.files(ws)]
    assert "short of 1 vote(s)" in text
    picked = [r["image_id"] for r in tables.COMPETITIONS.read(ws).to_pylist()]
    assert len(picked) >= 2 and not set(picked) & (s["mad"] | s["entropy"])  # neither model's training images
    vetoed = picked[0]
    for image_id in picked:
        store.record(ws, rating_key(cid), image_id, "ann", None if image_id == vetoed else 4)
    counted = [i for i in picked if i != vetoed and i not in t1]  # T(1)'s images are labelled already
    if counted:
        madmine("compete", "target@mad", "target@entropy", "--export", str(tmp_path / "cmp"), "--format", "coco")
        assert json.loads((tmp_path / "cmp" / "annotations.json").read_text())["annotations"] == []
        assert sorted(label_export(ws, cfg, tmp_path / "cmp", truth.__getitem__)) == sorted(counted)
    assert "1 vetoed as out of domain" in madmine("compete", "target@mad", "target@entropy")
    (result,) = tables.COMPETITION_RESULTS.read(ws).to_pylist()
    scored = [i for i in picked if i != vetoed]
    assert (result["protocol"], result["vetoed"], result["labelled"]) == ("mad", 1, len(scored))
    miou_a = dataset_miou(ws, versions["mad"], truth, scored)
    miou_b = dataset_miou(ws, versions["entropy"], truth, scored)
    assert result["miou_a"] == pytest.approx(miou_a) and result["miou_b"] == pytest.approx(miou_b)
    labels = {"a": f"target@{versions['mad']}", "b": f"target@{versions['entropy']}"}
    assert (result["model_a"], result["model_b"]) == (labels["a"], labels["b"])
    assert result["diff_low"] <= miou_a - miou_b <= result["diff_high"]
    low, high = result["diff_low"], result["diff_high"]
    assert result["winner"] == (labels["a"] if low > 0 else labels["b"] if high < 0 else None)
