"""Every model kind scores on the cluster, not only in process: a Hugging Face SegFormer target
and an ONNX competitor (on a label set of its own, mapped by a CSV) are built and run inside
Ray Data actors on the worker nodes, and give exactly what the same models give in process."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest

import model_kinds as mk
from configs import model, write_config
from madmine import tables
from madmine.completion import shard_markers
from madmine.config import load_config
from madmine.steps.ingest import ingest
from madmine.steps.score.run import score
from madmine.workspace import Workspace
from worlds import write_corpus

IMAGES = 16
KEYS = ["image_id", "model"]


def predictions(ws: Workspace, run_id: str):
    return tables.PREDICTIONS.read(ws, run_id=run_id).sort_by([(k, "ascending") for k in KEYS])


def test_hf_and_onnx_models_score_in_ray_data_actors_on_the_nodes(tmp_path, on_multinode):
    cluster, env = on_multinode
    write_corpus(tmp_path / "corpus", IMAGES, seed=81)
    mk.save_segformer(tmp_path / "seg", 4, size=32, seed=11)
    mk.save_onnx(tmp_path / "perm.onnx", mk.PermutedColourNet())
    mk.permuted_csv(tmp_path / "perm.csv")
    models = (model("seg", "target", 'hf = "seg"')
              + model("perm", "competitor", 'onnx = "perm.onnx"\nclass_map = "perm.csv"\ninput_size = 32'))
    cfg = load_config(write_config(tmp_path, models, workspace="on-cluster/",
                                   scoring='shard_size = 4\nbatch_size = 2\nactors = 2\nprecision = "fp32"'))
    here = dataclasses.replace(cfg, workspace_uri=str(tmp_path / "in-process"))
    for config in (cfg, here):
        ingest(Workspace.from_config(config), [str(tmp_path / "corpus")], show_progress=False)

    cmd = [str(Path(sys.executable).parent / "madmine"), "--config", str(cfg.path), "score", "--executor", "ray"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = score(here, executor="local", show_progress=False)

    ws = Workspace.from_config(cfg)
    markers = shard_markers(ws, reference.run_id)  # the same models: the same run id
    nodes = {markers.get(s)["node"] for s in markers.done()}
    assert len(markers.done()) == IMAGES // 4 and nodes <= set(cluster.workers) and nodes, nodes  # never the head
    got, want = predictions(ws, reference.run_id), predictions(Workspace.from_config(here), reference.run_id)
    assert got.num_rows == want.num_rows == 2 * IMAGES
    assert got.select(KEYS + ["class_pixels"]).equals(want.select(KEYS + ["class_pixels"]))
    target = pc.equal(got.column("model"), "seg")
    entropy = got.filter(target).column("mean_entropy").to_pylist()
    assert entropy == pytest.approx(want.filter(pc.equal(want.column("model"), "seg")).column("mean_entropy").to_pylist(),
                                    abs=1e-6)
    pairs = tables.PAIRS.read(ws, run_id=reference.run_id).sort_by("image_id")
    assert pairs.column("d").to_pylist() == pytest.approx(
        tables.PAIRS.read(Workspace.from_config(here), run_id=reference.run_id).sort_by("image_id").column("d").to_pylist())
