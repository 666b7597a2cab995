"""testset, evaluate, compete and report through madmine's own Typer app."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import evaluate_world as world
from madmine import tables
from madmine.cli import app
from madmine.errors import MadmineError


@pytest.fixture
def run(tmp_path):
    w = world.build(tmp_path / "w", n=40, labelled=lambda k: k % 3 != 0)
    w.ws.remove(tables.SELECTED.path(w.ws, round=w.round, strategy="mad"))  # T(R+1) is drawn before S(R+1)
    def invoke(*args):
        result = CliRunner().invoke(app, ["--config", str(w.config_path), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    return w, invoke


def test_testset_evaluate_compete_report(run, tmp_path):
    w, invoke = run
    text = invoke("testset", "--round", "1", "--size", "12", "--per-class", "2")
    assert "T(2) (round 1): 12 of 40 candidates" in text and "annotate export --set test --round 1" in text
    assert "out of domain" in text and "in some S(j)" in text
    assert len(w.ws.read_parquet([tables.TESTSETS.path(w.ws, round=1)])) == 12
    with pytest.raises(MadmineError, match="--force"):
        invoke("testset", "--round", "1")

    text = invoke("evaluate", "--no-quality")
    assert "Table 1" in text and "T(2)" in text and "wait for labels" in text

    text = invoke("compete", "target", "fcn", "--n", "6", "--protocol", "d-ranking")
    assert "Table 2" in text and "competition target-maps" in text
    assert "wait for annotation" in text and "--export DIR" in text
    text = invoke("compete", "target", "fcn", "--protocol", "d-ranking", "--export", str(tmp_path / "exp"),
                  "--format", "cvat")
    assert "kept from the saved selection" in text and "exported" in text and (tmp_path / "exp" / "images").is_dir()
    # blank masks: no colour mask of either model's prediction starts the labels
    assert not (tmp_path / "exp" / "SegmentationClass").exists()
    assert len((tmp_path / "exp" / "ImageSets" / "Segmentation" / "default.txt").read_text().split()) > 0

    out = tmp_path / "r.html"
    text = invoke("report", "--round", "1", "--out", str(out))
    assert str(out) in text and out.read_text().startswith("<!doctype html>")
