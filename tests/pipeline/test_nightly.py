"""Nightly runs: Ray Jobs against a real `ray start` cluster, the workspace lock, stale locks."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import DILATED, SEGNET, model, models, write_config
from madmine import tables
from madmine.config import load_config
from madmine.errors import MadmineError
from madmine.lock import LockHeld, WorkspaceLock
from madmine.pipeline.nightly import nightly
from madmine.steps.score.runs import run_records
from madmine.workspace import Workspace
from worlds import write_corpus

REPO = Path(__file__).resolve().parents[2]
MODELS = models(
    model("target", "target", factory=SEGNET, input_size=32),
    model("other", "competitor", factory=DILATED, input_size=32),
)


def nightly_config(root: Path, workspace: str = "work/", extra: str = ""):
    return load_config(
        write_config(
            root, MODELS, workspace=workspace, scoring="shard_size = 8", extra=f'[nightly]\nsources = ["corpus/"]\n{extra}'
        )
    )


def submit(dashboard: str, config: Path, env: dict) -> subprocess.CompletedProcess:
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "job",
        "submit",
        "--address",
        dashboard,
        "--working-dir",
        str(REPO),
        "--",
        sys.executable,
        "ray_jobs/nightly_job.py",
        "--config",
        str(config),
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)


def test_ray_job_submit_nightly_scores_only_new_images(tmp_path, ray_cluster, cli_env):
    write_corpus(tmp_path / "corpus", 10, seed=31)
    cfg = nightly_config(tmp_path)
    ws = Workspace.from_config(cfg)
    first = submit(ray_cluster["dashboard"], cfg.path, cli_env)
    assert first.returncode == 0 and "succeeded" in first.stdout + first.stderr, (first.stdout + first.stderr)[-3000:]
    assert "ingest: 10 new images" in first.stdout
    run = run_records(ws)[-1]
    assert run["status"] == "complete" and tables.PREDICTIONS.read(ws, run_id=run["run_id"]).num_rows == 20

    write_corpus(tmp_path / "corpus", 4, seed=32)  # the corpus grows
    second = submit(ray_cluster["dashboard"], cfg.path, cli_env)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    assert "ingest: 4 new images" in second.stdout
    history = [ws.get_json(ws.path("nightly", "history", n)) for n in ws.listdir(ws.path("nightly", "history"))]
    assert [h["scored"] for h in history] == [10, 4]
    assert history[1]["forwarded"] == {"target": 4, "other": 4}
    assert tables.PREDICTIONS.read(ws, run_id=run["run_id"]).num_rows == 28


def test_two_nightly_runs_at_once_one_runs_the_other_exits_with_the_lock_message(tmp_path, cli_env):
    write_corpus(tmp_path / "corpus", 6, seed=33)
    cfg = nightly_config(tmp_path)
    cmd = [str(Path(sys.executable).parent / "madmine"), "--config", str(cfg.path), "nightly"]
    procs = [subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    ran = [o for o in outputs if "ingest: 6 new images" in o]
    held = [o for o in outputs if "another run" in o and "exiting" in o]
    assert len(ran) == 1 and len(held) == 1, outputs
    ws = Workspace.from_config(cfg)
    assert not ws.exists(ws.path("locks", "nightly.json"))  # released


def test_a_stale_lock_from_a_crashed_run_is_taken_over(tmp_path, ray_address):
    write_corpus(tmp_path / "corpus", 3, seed=34)
    cfg = nightly_config(tmp_path, extra="stale_after_s = 60\n")
    ws = Workspace.from_config(cfg)
    ws.put_json(ws.path("locks", "nightly.json"), {"token": "dead", "owner": "crashed-host:1", "heartbeat": time.time() - 3600})
    summary = nightly(cfg, ray_address=ray_address, lock_settle=0.1)
    assert summary.took_over_lock_from == "crashed-host:1" and summary.ingested == 3
    # a fresh lock is respected
    ws.put_json(ws.path("locks", "nightly.json"), {"token": "live", "owner": "busy-host:2", "heartbeat": time.time()})
    with pytest.raises(LockHeld, match="busy-host:2"):
        nightly(cfg, ray_address=ray_address, lock_settle=0.1)


def test_lock_on_s3_admits_exactly_one_of_racing_runs(s3_bucket):
    bucket, options = s3_bucket
    ws = Workspace(f"s3://{bucket}/ws", options)
    results = []

    def attempt():
        lock = WorkspaceLock(Workspace(f"s3://{bucket}/ws", options), "nightly", settle=0.5, heartbeat=0.2)
        try:
            lock.acquire()
            results.append("acquired")
            time.sleep(1.0)  # heartbeats run meanwhile
            lock.release()
        except LockHeld:
            results.append("held")

    threads = [threading.Thread(target=attempt) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["acquired", "held", "held"]
    assert not ws.exists(ws.path("locks", "nightly.json"))


def test_nightly_reads_with_the_configs_limits_and_fails_above_its_error_budget(tmp_path):
    """The unattended path honours [scoring] max_bytes, decode_timeout_s and max_error_fraction, as
    `madmine ingest` does: a file over max_bytes and an image slower to decode than decode_timeout_s are
    error rows, and a night whose ingest fails more files than the budget stops with the reason."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 6, seed=70)
    noise = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    Image.fromarray(noise).save(corpus / "large.png")  # ~1 MB of incompressible pixels
    Image.new("RGB", (6000, 6000), (10, 200, 30)).save(corpus / "slow.png")  # ~120 kB; over 1 s to decode here
    assert (corpus / "large.png").stat().st_size > 262144 > (corpus / "slow.png").stat().st_size
    cfg = load_config(write_config(tmp_path, MODELS, scoring="max_bytes = 262144\ndecode_timeout_s = 0.25\n"
                                   "max_error_fraction = 0.2", extra='[nightly]\nsources = ["corpus/"]\n'))
    with pytest.raises(MadmineError, match=r"2 of 8 files failed \(25.0%\), above max_error_fraction=20.0%"):
        nightly(cfg, lock_settle=0.0)
    ws = Workspace.from_config(cfg)
    errors = {Path(r["uri"]).name: r["error"] for r in tables.ERRORS.read(ws, run_id="ingest").to_pylist()}
    assert errors == {"large.png": "file too large", "slow.png": "decode timed out"}
    assert tables.MANIFEST.read(ws).num_rows == 6  # what could be read is kept
    assert not ws.listdir(ws.path("nightly", "history"))  # the night did not finish: no summary claims it did
