"""`madmine ingest` on several Ray nodes, corpus and workspace on S3: the shards are read,
hashed and probed on the nodes (the driver only lists, plans and promotes), and a node lost
mid-run costs time, never an image."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import s3fs

from configs import SLOW_MODELS, write_config
from madmine import tables
from madmine.completion import Markers
from madmine.config import load_config
from madmine.workspace import Workspace
from network import wait_for
from worlds import write_corpus

IMAGES = 800
SHARD = 4


def test_ingest_shards_run_on_the_nodes_and_a_lost_node_loses_nothing(tmp_path, on_multinode, s3_bucket, s3_endpoint):
    cluster, env = on_multinode
    bucket, options = s3_bucket
    paths = write_corpus(tmp_path / "corpus", IMAGES, seed=63)
    fs = s3fs.S3FileSystem(**options)
    fs.put(str(tmp_path / "corpus") + "/", f"{bucket}/corpus/", recursive=True)
    storage = f'[storage]\nendpoint_url = "{s3_endpoint}"\nkey = "testing"\nsecret = "testing"\n'
    cfg = load_config(write_config(tmp_path, SLOW_MODELS, workspace=f"s3://{bucket}/ws", scoring="actors = 3", extra=storage))
    ws = Workspace.from_config(cfg)
    first, second = cluster.workers[:2]

    cmd = [str(Path(sys.executable).parent / "madmine"), "--config", str(cfg.path), "ingest", f"s3://{bucket}/corpus/",
           "--shard-size", str(SHARD)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ingest_id = wait_for(lambda: ws.listdir(ws.path("ingest")), 120, "the ingest to start")[0]
        markers = Markers(ws, f"ingest/{ingest_id}/shards")
        seen: dict[str, str] = {}

        def committed_nodes() -> set[str]:
            for shard in markers.done():
                if shard not in seen:
                    seen[shard] = markers.get(shard)["node"]
            return set(seen.values())

        wait_for(lambda: {first, second} <= committed_nodes(), 300, "a committed shard on each node")
        cluster.kill(first)  # lost ungracefully, with its actor and the shard it was reading
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert f"{IMAGES} new images" in " ".join(out.split() + err.split()), out + err

    manifest = tables.MANIFEST.read(ws)
    expected = {hashlib.sha256(p.read_bytes()).hexdigest()[:32] for p in paths}
    ids = manifest.column("image_id").to_pylist()
    assert len(ids) == len(set(ids)) == IMAGES and set(ids) == expected  # every image exactly once
    assert len(tables.MANIFEST.files(ws)) == IMAGES // SHARD  # one part per shard
    assert {first, second} <= set(seen.values())  # the shards ran on the nodes, not in the driver
    assert not ws.listdir(ws.path("ingest"))
