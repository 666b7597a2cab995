"""Fine-tuning and the nightly Ray job on several Ray nodes: a worker node lost mid-run is
survived (training resumes from its last checkpoint; the nightly job finishes every image)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient
from ray.util.state import list_actors

from configs import DILATED, SLOW_COLOUR, model, models, write_config
from finetune_world import registered_epoch, world
from madmine import tables
from madmine.completion import shard_markers
from madmine.config import load_config
from madmine.steps.score.runs import run_records
from madmine.workspace import Workspace
from network import wait_for
from worlds import write_corpus

REPO = Path(__file__).resolve().parents[2]
FINETUNE = """
lr_grid = [0.02]
epochs = 6
crop_size = 32
loader_workers = 0
max_failures = 3
num_workers = 2
"""


def train_worker_nodes(dashboard: str) -> list[str]:
    actors = list_actors(address=dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
    return [a["node_id"] for a in actors if "RayTrainWorker" in (a.get("class_name") or "")]


@pytest.mark.timeout(1800)
def test_finetuning_resumes_from_its_checkpoint_when_a_worker_node_is_lost(tmp_path, on_multinode):
    cluster, env = on_multinode
    while len(cluster.workers) < 3:  # two train workers of one CPU each, and the trial's driver
        cluster.add()
    cfg = world(tmp_path, n_s=6, n_s0=6, n_t0=4, finetune=FINETUNE, factory="finetune_world:slow_tiny_segnet")
    ws = Workspace.from_config(cfg)
    trial = Path(ws.path("finetune", "round-0-mad", "trials", "lr-0.02"))
    cmd = [str(Path(sys.executable).parent / "madmine"), "--config", str(cfg.path), "finetune", "--round", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        snapshot = trial / "checkpoint_manager_snapshot.json"
        wait_for(lambda: snapshot.exists() and registered_epoch(snapshot.read_bytes()) >= 1, 900,
                 "the first registered checkpoint", alive=lambda: proc.poll() is None)
        nodes = wait_for(lambda: train_worker_nodes(cluster.dashboard), 120, "the train workers")
        lost = next(n for n in cluster.workers if n in nodes)
        assert not (trial / "epoch-0006").exists(), "the node was lost too late"
        cluster.kill(lost)
        cluster.add()  # capacity for the restarted worker group
        out, _ = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    curves = tables.FINETUNE_CURVES.read(ws).to_pylist()
    epochs = sorted(r["epoch"] for r in curves if r["trial"] == "lr-0.02")
    assert epochs == list(range(0, 7)), epochs  # every epoch once: resumed, not restarted
    resumed = [r["epoch"] for r in curves if r["resumed"]]
    assert len(resumed) == 1 and 2 <= resumed[0] <= 6, curves
    assert len(tables.MODELS.read(ws).to_pylist()) == 1


NIGHTLY_MODELS = models(
    model("target", "target", factory=SLOW_COLOUR, input_size=32),
    model("other", "competitor", factory=DILATED, input_size=32),
)


@pytest.mark.timeout(1200)
def test_the_nightly_job_survives_a_lost_worker_node(tmp_path, on_multinode):
    cluster, env = on_multinode
    images = 120
    write_corpus(tmp_path / "corpus", images, seed=71)
    cfg = load_config(write_config(tmp_path, NIGHTLY_MODELS, scoring="shard_size = 4\nbatch_size = 2\nactors = 2",
                                   extra='[nightly]\nsources = ["corpus/"]\n'))
    ws = Workspace.from_config(cfg)
    client = JobSubmissionClient(cluster.dashboard)
    # The entry point by its path, not a working_dir: this machine's nodes share one Ray temp
    # folder, and a node that dies or joins may collect the working_dir copy that processes
    # on the other nodes still run in (an artifact of several nodes on one machine).
    job = client.submit_job(
        entrypoint=f"{sys.executable} {REPO / 'ray_jobs' / 'nightly_job.py'} --config {cfg.path}",
        runtime_env={"env_vars": {"PYTHONPATH": env["PYTHONPATH"]}},
    )
    try:
        run_id = wait_for(lambda: [r["run_id"] for r in run_records(ws)], 300, "the nightly scoring run")[0]
        wait_for(lambda: len(shard_markers(ws, run_id).done()) >= 2, 300, "two committed shards",
                 alive=lambda: client.get_job_status(job) not in (JobStatus.FAILED, JobStatus.STOPPED))
        cluster.kill(cluster.workers[0])
        cluster.add()
        status = wait_for(lambda: (s := client.get_job_status(job)).is_terminal() and s, 900, "the job to end")
    finally:
        if not client.get_job_status(job).is_terminal():
            client.stop_job(job)
    logs = client.get_job_logs(job)
    failure = logs[logs.rfind("Traceback"):][:3000] if "Traceback" in logs else logs[-3000:]
    assert status == JobStatus.SUCCEEDED, failure
    assert f"ingest: {images} new images" in logs
    history = [ws.get_json(ws.path("nightly", "history", n)) for n in ws.listdir(ws.path("nightly", "history"))]
    assert [h["scored"] for h in history] == [images]
    preds = tables.PREDICTIONS.read(ws, run_id=run_id)
    assert preds.num_rows == 2 * images
    assert len(set(zip(preds.column("image_id").to_pylist(), preds.column("model").to_pylist()))) == 2 * images
    assert json.loads(json.dumps(history[0]["forwarded"])) == {"target": images, "other": images}
