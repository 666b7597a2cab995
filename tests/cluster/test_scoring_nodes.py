"""`madmine score` on several Ray nodes with the workspace on S3: the shards spread over the
nodes, a node lost mid-run costs time and never an image, and a node that joins gets work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from configs import SLOW_MODELS, write_config
from madmine import tables
from madmine.completion import shard_markers
from madmine.config import load_config
from madmine.steps.ingest import ingest
from madmine.steps.score.runs import run_records
from madmine.workspace import Workspace
from network import wait_for
from worlds import write_corpus

IMAGES = 320  # 0.15 s each: the run outlasts a joining node's start-up (torch import, model build)
SHARD = 4


def s3_config(root: Path, bucket: str, endpoint: str):
    storage = f'[storage]\nendpoint_url = "{endpoint}"\nkey = "testing"\nsecret = "testing"\n'
    scoring = f"shard_size = {SHARD}\nbatch_size = 2\nactors = 3\ndecode_threads = 1"
    return load_config(write_config(root, SLOW_MODELS, workspace=f"s3://{bucket}/ws", scoring=scoring, extra=storage))


def test_shards_spread_over_nodes_a_lost_node_loses_nothing_and_a_new_node_gets_work(
    tmp_path, on_multinode, s3_bucket, s3_endpoint
):
    cluster, env = on_multinode
    bucket, _ = s3_bucket
    write_corpus(tmp_path / "corpus", IMAGES, seed=61)
    cfg = s3_config(tmp_path, bucket, s3_endpoint)
    ws = Workspace.from_config(cfg)
    ingest(ws, [str(tmp_path / "corpus")], show_progress=False)
    first, second = cluster.workers[:2]

    proc = subprocess.Popen([str(Path(sys.executable).parent / "madmine"), "--config", str(cfg.path), "score"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = wait_for(lambda: [r["run_id"] for r in run_records(ws)], 120, "the run to start")[0]
        markers = shard_markers(ws, run_id)

        def committed_nodes() -> set[str]:
            return {markers.get(s)["node"] for s in markers.done()}

        wait_for(lambda: {first, second} <= committed_nodes(), 240, "a committed shard on each of the first two nodes")
        joined = cluster.add()  # a node joins mid-run ...
        cluster.kill(first)  # ... and another is lost, ungracefully, with its actor and its shard in flight
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]

    committed = {s: markers.get(s) for s in markers.done()}
    assert len(committed) == IMAGES // SHARD  # every shard once
    nodes = {m["node"] for m in committed.values()}
    assert {first, second} <= nodes, nodes  # the work was spread over both first nodes (and they kept their shards)
    assert joined in nodes, f"the node that joined mid-run got no shard: {nodes}"

    preds = tables.PREDICTIONS.read(ws, run_id=run_id)
    pairs = tables.PAIRS.read(ws, run_id=run_id)
    ids = set(tables.MANIFEST.read(ws).column("image_id").to_pylist())
    assert preds.num_rows == 2 * IMAGES and pairs.num_rows == IMAGES  # every image exactly once
    assert set(pairs.column("image_id").to_pylist()) == ids
    assert len(set(zip(preds.column("image_id").to_pylist(), preds.column("model").to_pylist()))) == 2 * IMAGES
    # files a lost worker left without a marker are never read
    written = tables.PREDICTIONS.files(ws, run_id=run_id, committed_only=False)
    assert len(tables.PREDICTIONS.files(ws, run_id=run_id)) == len(committed) <= len(written)
