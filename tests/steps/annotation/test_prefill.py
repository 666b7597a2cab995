"""Pre-fill: test sets are exported blank by default (a mask that starts from the model under test
pulls the labels toward it), S keeps the target's prediction, and any other start is asked for
by name and recorded in the export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import evaluate_world as world
from madmine.cli import app
from madmine.steps.annotation import coco
from madmine.steps.annotation.exchange import export
from madmine.steps.evaluation.testset import build


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    w = world.build(tmp_path_factory.mktemp("prefill") / "w", n=24)
    build(w.config, w.ws, w.round, size=6, per_class=6, after_s=True)
    return w


def manifest(folder) -> dict:
    return json.loads((folder / "madmine-export.json").read_text())


def decoded(doc: dict, image_id: str) -> np.ndarray:
    """The starting mask of one image of a COCO export, painted from its RLEs."""
    image = next(i for i in doc["images"] if i["image_id"] == image_id)
    mask = np.zeros((image["height"], image["width"]), np.uint8)
    for a in doc["annotations"]:
        if a["image_id"] == image["id"]:
            mask[coco.decode(a["segmentation"], image["height"], image["width"])] = a["category_id"]
    return mask


def test_test_sets_are_blank_in_every_format(w, tmp_path):
    count, files = export(w.ws, w.config, "coco", tmp_path / "coco", w.round, which="test")
    assert count == 6 and json.loads(files[0].read_text())["annotations"] == []
    assert manifest(tmp_path / "coco")["prefill"] is None
    export(w.ws, w.config, "labelstudio", tmp_path / "ls", w.round, which="test")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert len(tasks) == 6 and all("predictions" not in t for t in tasks)
    assert "starts blank" in (tmp_path / "ls" / "README.md").read_text()
    export(w.ws, w.config, "cvat", tmp_path / "cvat", w.round, which="test")
    assert not (tmp_path / "cvat" / "SegmentationClass").exists()


def test_s_keeps_the_targets_prediction_and_a_prefill_is_asked_for_by_name(w, tmp_path):
    _, files = export(w.ws, w.config, "coco", tmp_path / "s", w.round, which="s")
    doc = json.loads(files[0].read_text())
    assert doc["annotations"] and manifest(tmp_path / "s")["prefill"] == f"target@{w.versions['target']}"
    _, files = export(w.ws, w.config, "coco", tmp_path / "t", w.round, which="test", prefill="fcn")
    doc = json.loads(files[0].read_text())
    assert manifest(tmp_path / "t")["prefill"] == f"fcn@{w.versions['fcn']}"
    first = doc["images"][0]
    expected = np.asarray(Image.fromarray(w.competitor_maps[first["image_id"]]).resize((first["width"], first["height"]),
                                                                                       Image.NEAREST))
    np.testing.assert_array_equal(decoded(doc, first["image_id"]), expected)  # the competitor's map, not the target's
    _, files = export(w.ws, w.config, "coco", tmp_path / "blank-s", w.round, which="s", prefill="none")
    assert json.loads(files[0].read_text())["annotations"] == []


def test_cli_names_the_start_and_warns_about_a_prefilled_test_set(w, tmp_path):
    def run(*args):
        result = CliRunner().invoke(app, ["--config", str(w.config_path), "annotate", "export", "--format", "coco",
                                          "--round", str(w.round), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    assert "set test, blank masks" in run("--set", "test", "--out", str(tmp_path / "a"))
    text = run("--set", "test", "--out", str(tmp_path / "b"), "--prefill", "target")
    assert "pre-filled with target" in text and "favours the pre-filling model" in text
    assert json.loads((tmp_path / "b" / "annotations.json").read_text())["annotations"]
