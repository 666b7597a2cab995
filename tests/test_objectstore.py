"""An object store that fails: every step of a round on a store that answers a share of its
requests with 503 SlowDown, 500, a reset connection or a late answer (tests/support/faulty_s3.py,
one proxy for the session in front of moto's server).

At 5 % faults nothing is lost and nothing is counted twice, and the retries are in the
summaries; at 100 % a run stops with one line and exit code 2, and what it committed before
is whole and is continued by the next run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import s3fs
import torch
from botocore.exceptions import ClientError, EndpointConnectionError

from configs import SLOW_MODELS, write_config
from finetune_world import add_round, pretrained, scenes, write_pairs
from finetune_world import write_config as finetune_config
from madmine import objectstore, tables
from madmine.completion import shard_markers
from madmine.config import load_config
from madmine.pipeline.nightly import nightly
from madmine.steps.bounds import run_bounds
from madmine.steps.ingest import ingest
from madmine.steps.rating import store
from madmine.steps.score.run import score
from madmine.steps.score.runs import run_records
from madmine.steps.select import run_select
from madmine.steps.train.run import finetune
from madmine.workspace import Workspace
from worlds import write_corpus, write_labelled

SUPPORT = Path(__file__).resolve().parent / "support"
ALL_FAULTS = ("slowdown", "error", "reset", "slow")
IMAGES = 18


def store_world(root: Path, proxy, bucket: str, max_attempts: int = 5, shard_size: int = 6):
    """A config whose workspace and corpus live in `bucket`, reached through the proxy; the corpus
    uploaded while the store is healthy (IMAGES images and one copy of the first)."""
    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": proxy.endpoint})
    fs.mkdir(bucket)
    paths = write_corpus(root / "corpus", IMAGES, seed=71)
    for path in paths:
        fs.put_file(str(path), f"{bucket}/corpus/{path.name}")
    fs.put_file(str(paths[0]), f"{bucket}/corpus/zz-copy-of-first.png")
    s0_images, s0_labels = write_labelled(root / "s0", 6, seed=41)
    storage = (f'[storage]\nendpoint_url = "{proxy.endpoint}"\nkey = "testing"\nsecret = "testing"\n'
               f"max_attempts = {max_attempts}\n")
    cfg = load_config(write_config(root, SLOW_MODELS, workspace=f"s3://{bucket}/ws", scoring=f"shard_size = {shard_size}",
                                   extra=storage + "\n[selection]\nn3 = 3\n"))
    return cfg, s0_labels, fs


def exactly_once(ws: Workspace, run_id: str, images: int, models: int = 2) -> None:
    preds = tables.PREDICTIONS.read(ws, run_id=run_id)
    pairs = tables.PAIRS.read(ws, run_id=run_id)
    keys = set(zip(preds.column("image_id").to_pylist(), preds.column("model").to_pylist()))
    assert preds.num_rows == len(keys) == models * images
    assert pairs.num_rows == len(set(zip(pairs.column("image_id").to_pylist(), pairs.column("competitor").to_pylist())))
    assert pairs.num_rows == (models - 1) * images


def test_a_round_and_a_night_at_five_percent_faults_lose_and_duplicate_nothing(tmp_path, flaky_store):
    cfg, s0_labels, fs = store_world(tmp_path, flaky_store, "five-percent")
    ws = Workspace.from_config(cfg)
    flaky_store.set(0.05, ALL_FAULTS)
    faults_before, retries = flaky_store.total_faults(), {}

    ingested = ingest(ws, ["s3://five-percent/corpus/"], storage_options=cfg.storage_options, shard_size=4,
                      show_progress=False)
    manifest = tables.MANIFEST.read(ws)
    assert ingested.added == manifest.num_rows == len(set(manifest.column("image_id").to_pylist())) == IMAGES
    assert ingested.duplicates == 1 and ingested.error_count == 0 and ingested.listed == IMAGES + 1
    retries["ingest"] = ingested.retries

    scored = score(cfg, executor="local", show_progress=False)
    assert scored.images_scored == IMAGES and scored.errors == 0
    exactly_once(ws, scored.run_id, IMAGES)
    retries["score"] = scored.retries

    run_bounds(cfg, str(s0_labels))
    selected = run_select(cfg, 0)
    retries["select"] = selected.retries
    flaky_store.set(0.0)
    assert selected.num_images > 0 and selected.table.equals(run_select(cfg, 0).table)  # as from a healthy store
    flaky_store.set(0.05, ALL_FAULTS)

    votes = {image_id: 1 + k % 5 for k, image_id in enumerate(sorted(set(selected.table.column("image_id").to_pylist())))}
    for image_id, vote in votes.items():  # the rating app stores each vote as one object before it answers
        store.record(ws, 0, image_id, "alice", vote)
    assert {e["image_id"]: e["score"] for e in store.load_events(ws, 0)} == votes
    assert {r["image_id"]: r["score"] for r in store.materialise(ws, 0).to_pylist()} == votes

    for k, path in enumerate(write_corpus(tmp_path / "more", 4, seed=72)):  # the corpus grows: a night
        flaky_store.set(0.0)
        fs.put_file(str(path), f"five-percent/corpus/more-{k}.png")
        flaky_store.set(0.05, ALL_FAULTS)
    night = nightly(cfg, ["s3://five-percent/corpus/"])
    assert night.ingested == 4 and night.scored == 4 and night.ingest_errors == 0
    exactly_once(ws, night.run_id, IMAGES + 4)
    retries["nightly"] = night.retries

    faults = flaky_store.total_faults() - faults_before
    flaky_store.set(0.0)
    print(f"\n{faults} faults injected ({dict(flaky_store.faults)}); retries in the summaries: {retries}")
    assert faults > 10 and sum(retries.values()) > 0
    assert not ws.listdir(ws.path("ingest"))  # every ingest cleaned its working area


def madmine(cfg, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SUPPORT)}  # the test model factories
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([str(Path(sys.executable).parent / "madmine"), "--config", str(cfg.path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def test_a_store_that_always_fails_stops_a_run_with_one_line_and_the_next_run_continues(tmp_path, flaky_store):
    cfg, _, fs = store_world(tmp_path, flaky_store, "always-failing", max_attempts=2, shard_size=2)
    ws = Workspace.from_config(cfg)

    flaky_store.set(1.0, ("slowdown", "error", "reset"))  # an ingest that cannot read the store adds nothing
    proc = madmine(cfg, "ingest", "s3://always-failing/corpus/")
    _, err = proc.communicate(timeout=300)
    flaky_store.set(0.0)
    assert proc.returncode == 2 and "object store kept failing" in one_error_line(err)
    assert not tables.MANIFEST.files(ws) and not tables.ERRORS.files(ws)  # and records no source as broken

    assert ingest(ws, ["s3://always-failing/corpus/"], storage_options=cfg.storage_options,
                  show_progress=False).added == IMAGES
    proc = madmine(cfg, "score", "--executor", "local")
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not ws.listdir(ws.path("runs")):
            time.sleep(0.2)
        run_id = ws.listdir(ws.path("runs"))[0]
        markers = shard_markers(ws, run_id)
        while time.time() < deadline and len(markers.done()) < 2:
            time.sleep(0.1)
        flaky_store.set(1.0, ("slowdown", "error", "reset"))  # the store goes down mid-run
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        flaky_store.set(0.0)
    assert proc.returncode == 2 and "object store kept failing" in one_error_line(err)

    committed = markers.done()
    assert 2 <= len(committed) < IMAGES // 2 and run_records(ws)[0]["status"] != "complete"
    visible = tables.PREDICTIONS.read(ws, run_id=run_id)  # only committed shards, each whole
    assert visible.num_rows == 2 * sum(markers.get(s)["images"] for s in committed)

    again = score(cfg, executor="local", show_progress=False)  # the store is back: the run goes on
    assert again.shards_skipped == len(committed) and again.images_scored == IMAGES - visible.num_rows // 2
    exactly_once(ws, run_id, IMAGES)


def test_failure_line_names_the_store_error_and_ignores_others():
    slow = ClientError({"Error": {"Code": "SlowDown", "Message": "reduce"},
                        "ResponseMetadata": {"HTTPStatusCode": 503, "RetryAttempts": 4}}, "PutObject")
    wrapped = OSError(16, "Please reduce your request rate.")
    wrapped.__cause__ = slow
    assert objectstore.failure_line(wrapped).startswith("the object store kept failing: SlowDown (HTTP 503) on PutObject "
                                                        "after 5 attempts")
    assert "EndpointConnectionError" in objectstore.failure_line(EndpointConnectionError(endpoint_url="http://x"))
    missing = ClientError({"Error": {"Code": "NoSuchKey"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetObject")
    assert objectstore.failure_line(missing) is None  # a missing object is the caller's business, not an outage
    assert objectstore.failure_line(ValueError("bug")) is None


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_retries_are_bounded_and_counted(tmp_path, flaky_store, max_attempts):
    fs_opts = objectstore.with_retry_policy({"key": "testing", "secret": "testing",
                                             "client_kwargs": {"endpoint_url": flaky_store.endpoint}}, max_attempts)
    ws = Workspace(f"s3://bounded-{max_attempts}/ws", fs_opts)
    ws.fs.mkdir(f"bounded-{max_attempts}")
    flaky_store.set(1.0, ("slowdown",))
    before, requests = objectstore.retries(), flaky_store.total_requests()
    with pytest.raises(OSError) as failed:
        ws.put_bytes(ws.path("x"), b"data")
    assert flaky_store.total_requests() - requests == max_attempts  # one PUT, tried max_attempts times
    assert objectstore.retries() - before == max_attempts - 1
    assert f"after {max_attempts} attempts" in objectstore.failure_line(failed.value)


ONE_TRIAL = """
lr_grid = [0.02]
epochs = 3
crop_size = 32
loader_workers = 0
max_failures = 2
"""


@pytest.mark.timeout(900)
def test_fine_tuning_checkpoints_at_five_percent_faults(tmp_path, flaky_store, ray_address):
    """Ray Train writes each epoch's checkpoint to the workspace on S3 through the failing store."""
    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": flaky_store.endpoint})
    fs.mkdir("tuning")
    torch.save(pretrained(0), tmp_path / "target.pt")
    write_pairs(tmp_path / "s0", scenes(6, "s0", 1), "a")
    write_pairs(tmp_path / "t0", scenes(4, "s0", 2), "t")
    storage = f'\n[storage]\nendpoint_url = "{flaky_store.endpoint}"\nkey = "testing"\nsecret = "testing"\n'
    cfg = load_config(finetune_config(tmp_path, workspace="s3://tuning/work", storage=storage, finetune=ONE_TRIAL))
    ws = Workspace.from_config(cfg)
    add_round(ws, 0, scenes(6, "shift", 3), "s3://tuning/corpus", cfg.storage_options)

    flaky_store.set(0.05, ALL_FAULTS)
    faults = flaky_store.total_faults()
    result = finetune(cfg, 0, ray_address=ray_address, show_progress=False)
    faults = flaky_store.total_faults() - faults
    flaky_store.set(0.0)

    curves = tables.FINETUNE_CURVES.read(ws).to_pylist()
    assert sorted(r["epoch"] for r in curves) == [0, 1, 2, 3]  # every epoch once, none lost or repeated
    (row,) = tables.MODELS.read(ws).to_pylist()
    assert row["model_version"] == result.version and row["checkpoint_uri"].endswith("epoch-0003")
    assert fs.exists(row["checkpoint_uri"].removeprefix("s3://")) and fs.exists(row["weights_uri"].removeprefix("s3://"))
    print(f"\nfine-tuning: {faults} faults injected while it ran")
    assert faults > 0
