"""Fine-tuning as a real Ray Train job on the session cluster: it fixes the failures without
forgetting, publishes a new target version, survives a killed worker and a killed driver,
and keeps its checkpoints on S3 as well as on local disk.

Both tests train "slow" tiny networks (a sleep per training step) so that there is time to
interrupt them mid-training.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from typer.testing import CliRunner

from finetune_world import (
    add_round,
    measure,
    pretrained,
    registered_epoch,
    scenes,
    world,
    write_config,
    write_pairs,
)
from madmine import cli, tables
from madmine.config import load_config
from madmine.models.registry import build_network, model_version
from madmine.steps.ingest import ingest
from madmine.steps.score.run import score
from madmine.steps.train.versions import with_latest_target
from madmine.workspace import Workspace

REPO = Path(__file__).resolve().parents[3]


def curves(ws: Workspace, round_: int) -> list[dict]:
    return ws.read_parquet([tables.FINETUNE_CURVES.path(ws, round=round_, selection="mad")]).to_pylist()


def models(ws: Workspace) -> list[dict]:
    return tables.MODELS.read(ws).to_pylist()


def assert_each_epoch_once(rows: list[dict], trial: str, epochs: int) -> list[dict]:
    mine = sorted((r for r in rows if r["trial"] == trial), key=lambda r: r["epoch"])
    assert [r["epoch"] for r in mine] == list(range(epochs + 1)), mine
    assert mine[0]["train_loss"] is None and all(r["train_loss"] is not None for r in mine[1:])
    assert all(0.0 <= r["val_miou"] <= 1.0 for r in mine)
    return mine


def train_workers(ray_train: str) -> list[psutil.Process]:
    """Ray Train worker processes of this session's cluster (never another cluster's)."""
    session = f"ray-mm-{ray_train.rsplit(':', 1)[1]}"
    raylets = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "raylet" in " ".join(p.info["cmdline"] or [])[:300] and session in " ".join(p.info["cmdline"] or [])
    ]
    found = []
    for raylet in raylets:
        for child in raylet.children(recursive=True):
            try:
                if "RayTrainWorker" in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                pass
    return found


def kill_a_worker_mid_training(trials_dir: Path, trials: list[str], epochs: int, ray_train: str, running) -> str:
    """SIGKILL the Ray Train worker of the first trial that has a registered checkpoint and
    is not finished; returns that trial's name."""
    deadline = time.time() + 900  # worker start-up takes minutes on a busy 2-core machine
    while running() and time.time() < deadline:
        for trial in trials:
            folder = trials_dir / trial
            try:
                registered = registered_epoch((folder / "checkpoint_manager_snapshot.json").read_bytes())
            except (FileNotFoundError, ValueError):  # not written yet, or caught mid-write
                continue
            if not 1 <= registered <= epochs - 2:  # the kill must leave epochs to resume
                continue
            for worker in train_workers(ray_train):
                try:
                    if os.path.basename(worker.cwd()) == trial:  # Ray Train runs a worker in its run's folder
                        os.kill(worker.pid, signal.SIGKILL)
                        message = f"\nkilled worker {worker.pid} of {trial} after epoch {registered} was registered"
                        print(message, file=sys.__stdout__)  # the CLI runner captures sys.stdout meanwhile
                        return trial
                except psutil.NoSuchProcess:
                    pass
        time.sleep(0.1)
    raise AssertionError("no Ray Train worker was found mid-training to kill")


# ---- 1 + 2. it fixes the failures without forgetting S(0), through a killed worker ------------------
QUALITY = """
lr_grid = [0.01, 0.05]
epochs = 5
crop_size = 32
scale_range = [0.75, 1.5]
concurrent_trials = 2
loader_workers = 0
max_failures = 2
"""


@pytest.mark.timeout(1800)
def test_finetune_fixes_the_failures_without_forgetting_and_survives_a_killed_worker(tmp_path, ray_train):
    cfg = world(tmp_path, n_s=8, n_s0=8, n_t0=6, finetune=QUALITY, factory="finetune_world:slow_tiny_segnet")
    ws = Workspace.from_config(cfg)
    parent_version = model_version(cfg.target)
    args = ["--config", str(cfg.path), "finetune", "--round", "0"]
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=CliRunner().invoke(cli.app, args)))
    thread.start()
    trials = ["lr-0.01", "lr-0.05"]
    killed = kill_a_worker_mid_training(
        Path(ws.path("finetune", "round-0-mad", "trials")), trials, 5, ray_train, thread.is_alive
    )
    thread.join(timeout=1500)
    result = outcome["result"]
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "(winner)" in result.output

    (row,) = models(ws)
    new_spec = dataclasses.replace(cfg.target, weights=row["weights_uri"])
    assert row["model"] == "target" and row["role"] == "target" and row["round"] == 0
    assert row["parent_version"] == parent_version != row["model_version"]
    assert row["model_version"] == model_version(new_spec)  # the version scoring computes from the file
    assert Path(row["weights_uri"]).is_file() and Path(row["checkpoint_uri"]).is_dir()
    assert set(torch.load(row["weights_uri"], weights_only=True)) == set(pretrained(0))  # a plain state_dict

    rows = curves(ws, 0)
    assert {"round", "trial", "lr", "epoch", "train_loss", "val_miou"} <= set(rows[0])
    t0_parent = measure(cfg.target, scenes(6, "s0", 2))  # world() wrote these as T(0)
    assert all(r["val_miou"] == pytest.approx(t0_parent, abs=1e-9) for r in rows if r["epoch"] == 0)
    finals = {}
    for trial in trials:
        mine = assert_each_epoch_once(rows, trial, 5)  # resumed, not restarted: no epoch twice
        resumed = [r["epoch"] for r in mine if r["resumed"]]
        if trial == killed:
            assert len(resumed) == 1 and resumed[0] >= 2, f"{trial} did not resume from a checkpoint: {mine}"
            print(f"{trial}: the new worker group resumed at epoch {resumed[0]} of 5")
        else:
            assert not resumed
        kept = [r for r in mine if r["kept"]]
        assert len(kept) == 1 and kept[0]["val_miou"] == max(r["val_miou"] for r in mine[1:])  # the best epoch, not the last
        finals[mine[-1]["lr"]] = kept[0]["val_miou"]
    assert row["lr"] == max(finals, key=finals.get) and row["val_miou"] == max(finals.values())

    shift_test, s0_test = scenes(16, "shift", 51), scenes(16, "s0", 50)
    before = measure(cfg.target, shift_test), measure(cfg.target, s0_test)
    after = measure(new_spec, shift_test), measure(new_spec, s0_test)
    print(f"mIoU on held-out shifted data (the failures' distribution): {before[0]:.3f} -> {after[0]:.3f}")
    print(f"mIoU on held-out S(0)-like data: {before[1]:.3f} -> {after[1]:.3f}")
    assert after[0] > before[0] + 0.2, "fine-tuning did not fix the failures"
    assert after[1] > before[1] - 0.15 and after[1] > 0.6, "fine-tuning forgot S(0)"

    # scoring the new version: a new run in which only the target runs, competitors come from the cache
    write_pairs(tmp_path / "fresh", scenes(4, "shift", 77), "f")
    ingest(ws, [str(tmp_path / "fresh" / "images")], show_progress=False)
    assert score(cfg, executor="local", show_progress=False).forwarded == {"target": 4, "other": 4}
    assert with_latest_target(cfg, ws, before_round=0).target.weights == cfg.target.weights  # round 0: the original
    latest = with_latest_target(cfg, ws, before_round=1)
    assert latest.target.weights == row["weights_uri"]
    rescored = score(latest, executor="local", show_progress=False)
    assert rescored.forwarded == {"target": 4, "other": 0}
    run = ws.get_json(ws.path("runs", rescored.run_id, "run.json"))
    assert {m["name"]: m["version"] for m in run["models"]}["target"] == row["model_version"]
    # `madmine score` scores the newest version by itself: that run is the one just completed
    by_cli = CliRunner().invoke(cli.app, ["--config", str(cfg.path), "score", "--executor", "local"])
    assert by_cli.exit_code == 0, by_cli.output
    assert f"run{rescored.run_id}iscomplete" in "".join(by_cli.output.split())  # rich may wrap a long id
    again = CliRunner().invoke(cli.app, args)
    assert again.exit_code == 0 and "already fine-tuned" in again.output and len(models(ws)) == 1


TWO_WORKERS = """
lr_grid = [0.02]
epochs = 4
crop_size = 32
loader_workers = 0
max_failures = 2
num_workers = 2
"""


# ---- 3. checkpoints on S3, two workers, a killed driver that continues instead of starting over ----
@pytest.mark.timeout(1800)
def test_killed_driver_continues_from_s3_checkpoints(tmp_path, ray_train, cli_env, s3_bucket):
    import s3fs

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    endpoint = options["client_kwargs"]["endpoint_url"]
    torch.save(pretrained(0), tmp_path / "target.pt")
    fs.put(str(tmp_path / "target.pt"), f"{bucket}/weights/target.pt")
    t0 = scenes(2, "s0", 2)
    for name, pairs, prefix in (("s0", scenes(6, "s0", 1), "a"), ("t0", t0, "t")):
        write_pairs(tmp_path / name, pairs, prefix)
        fs.put(str(tmp_path / name), f"{bucket}/{name}", recursive=True)
    path = write_config(
        tmp_path,
        workspace=f"s3://{bucket}/work",
        factory="finetune_world:slow_tiny_segnet",
        weights=f"s3://{bucket}/weights/target.pt",
        storage=f'\n[storage]\nendpoint_url = "{endpoint}"\nkey = "testing"\nsecret = "testing"\n',
        folders=f"""
        s0_images = "s3://{bucket}/s0/images/"
        s0_labels = "s3://{bucket}/s0/labels/"
        t0_images = "s3://{bucket}/t0/images/"
        t0_labels = "s3://{bucket}/t0/labels/"
        """,
        finetune=TWO_WORKERS,
    )
    cfg = load_config(path)
    ws = Workspace.from_config(cfg)
    add_round(ws, 1, scenes(6, "shift", 3), f"s3://{bucket}/corpus", options)
    trial = f"{bucket}/work/finetune/round-1-mad/trials/lr-0.02"

    cmd = [sys.executable, str(REPO / "ray_jobs" / "finetune_job.py"), "--config", str(path), "--round", "1"]
    log = tmp_path / "first-driver.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, env=cli_env, stdout=sink, stderr=subprocess.STDOUT)
    registered, deadline = 0, time.time() + 900
    while registered < 1 and time.time() < deadline:
        fs.invalidate_cache()
        try:
            registered = registered_epoch(fs.cat_file(f"{trial}/checkpoint_manager_snapshot.json"))
        except (FileNotFoundError, ValueError):
            pass
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    assert registered >= 1, "no checkpoint was registered in time"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fs.invalidate_cache()
    assert not fs.exists(f"{trial}/epoch-0004"), "the driver was killed too late"
    for _ in range(100):  # the dead driver's trials and workers go with it
        if not train_workers(ray_train):
            break
        time.sleep(0.2)

    resumed = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    mine = assert_each_epoch_once(curves(ws, 1), "lr-0.02", 4)
    # two workers (DDP over gloo) each measured half of T(0): their summed confusion is the whole
    assert mine[0]["val_miou"] == pytest.approx(measure(cfg.target, t0, cfg.storage_options), abs=1e-9)
    (resumed_at,) = [r["epoch"] for r in mine if r["resumed"]]
    assert resumed_at >= 2, mine
    (row,) = models(ws)
    assert row["weights_uri"].startswith(f"s3://{bucket}/work/models/target/")
    assert row["checkpoint_uri"] == f"s3://{trial}/epoch-0004"
    new_spec = dataclasses.replace(cfg.target, weights=row["weights_uri"])
    assert model_version(new_spec, cfg.storage_options) == row["model_version"]
    build_network(new_spec, cfg.num_classes, cfg.storage_options)
    print(f"\ndriver killed mid-training; the re-run resumed at epoch {resumed_at} from s3://{trial}")
