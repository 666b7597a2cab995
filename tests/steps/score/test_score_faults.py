"""Faults during `madmine score`: a killed scoring actor, a killed driver, bad input."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.compute as pc
import pytest

from configs import COLOUR, SEGNET, SLOW_COLOUR, model, models, write_config
from madmine import tables
from madmine.completion import shard_markers
from madmine.config import load_config
from madmine.errors import MadmineError
from madmine.steps.ingest import image_id_of, ingest
from madmine.steps.score.run import score
from madmine.steps.score.runs import run_records
from madmine.workspace import Workspace
from worlds import bad_files, odd_images, stored_map, write_corpus

SLOW_MODELS = models(  # the shared slow pair with its own normalisation: both runs compared must use it alike
    model("target", "target", factory=SLOW_COLOUR, input_size=32, mean=[0.45, 0.45, 0.45], std=[0.225, 0.225, 0.225]),
    model("tiny", "competitor", factory=SEGNET, input_size=32),
)
SCORING = "shard_size = 4\nbatch_size = 2"


def scorer_actor_pids() -> list[int]:
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "MapWorker" in cmd and "ShardActor" in cmd:
            pids.append(proc.info["pid"])
    return pids


def setup_run(root: Path, n: int, workspace: str = "work/"):
    write_corpus(root / "corpus", n, seed=5)
    cfg = load_config(write_config(root, SLOW_MODELS, workspace=workspace, scoring=SCORING))
    ingest(Workspace.from_config(cfg), [str(root / "corpus")], show_progress=False)
    return cfg


def assert_exactly_once(ws: Workspace, run_id: str, n: int) -> None:
    preds = tables.PREDICTIONS.read(ws, run_id=run_id)
    pairs = tables.PAIRS.read(ws, run_id=run_id)
    assert preds.num_rows == 2 * n and pairs.num_rows == n
    assert len(set(zip(preds.column("image_id").to_pylist(), preds.column("model").to_pylist()))) == 2 * n
    assert len(set(pairs.column("image_id").to_pylist())) == n


def test_killed_scoring_actor_is_replaced_and_every_image_counts_once(tmp_path, ray_address):
    cfg = setup_run(tmp_path, 24)
    ws = Workspace.from_config(cfg)
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.update(result=score(cfg, ray_address=ray_address, show_progress=False))
    )
    thread.start()
    killed = None
    deadline = time.time() + 120
    while time.time() < deadline and killed is None:
        runs = ws.listdir(ws.path("runs"))
        if runs and shard_markers(ws, runs[0]).done() and scorer_actor_pids():
            killed = scorer_actor_pids()[0]
            committed_at_kill = len(shard_markers(ws, runs[0]).done())
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    thread.join(timeout=300)
    assert killed is not None, "no scoring actor was found to kill"
    assert committed_at_kill < 6, "the run had finished before the kill"
    result = outcome["result"]
    assert result.shards_total == 6 and result.errors == 0
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    assert_exactly_once(ws, result.run_id, 24)


def test_killed_driver_then_resume_skips_committed_shards_and_equals_an_uninterrupted_run(
    tmp_path, ray_address, cli_env
):
    cfg = setup_run(tmp_path, 32)
    ws = Workspace.from_config(cfg)
    cmd = [str(Path(sys.executable).parent / "madmine"), "--config", str(cfg.path), "score"]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    committed = []
    while time.time() < deadline:
        runs = ws.listdir(ws.path("runs"))
        committed = shard_markers(ws, runs[0]).done() if runs else []
        if len(committed) >= 2:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_id = ws.listdir(ws.path("runs"))[0]
    before = {s: ws.get_json(shard_markers(ws, run_id).path(s)) for s in shard_markers(ws, run_id).done()}
    assert 2 <= len(before) < 8, f"kill came too late or too early: {len(before)} of 8 shards"
    assert ws.get_json(ws.path("runs", run_id, "run.json"))["status"] == "running"

    resumed = subprocess.run(cmd + ["--resume"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for shard, marker in before.items():
        assert ws.get_json(shard_markers(ws, run_id).path(shard)) == marker  # not re-scored
    assert len(shard_markers(ws, run_id).done()) == 8
    assert_exactly_once(ws, run_id, 32)

    # the same corpus and config, scored without interruption in another workspace
    ref_root = tmp_path / "ref"
    ref_root.mkdir()
    ref_cfg = setup_run(ref_root, 32)
    ref = score(ref_cfg, ray_address=ray_address, show_progress=False)
    assert ref.run_id == run_id
    ref_ws = Workspace.from_config(ref_cfg)
    assert tables.ERRORS.read(ws, run_id=run_id) is None and tables.ERRORS.read(ref_ws, run_id=run_id) is None
    for table in ("predictions", "pairs"):
        got = tables.table(table).read(ws, run_id=run_id).sort_by([("image_id", "ascending")])
        want = tables.table(table).read(ref_ws, run_id=run_id).sort_by([("image_id", "ascending")])
        if table == "predictions":
            got, want = (t.sort_by([("image_id", "ascending"), ("model", "ascending")]) for t in (got, want))
        assert got.equals(want), table


ODD_MODELS = models(
    model("target", "target", factory=COLOUR, input_size=32),
    model("tiny", "competitor", factory=SEGNET, input_size=32),
)


def test_bad_input_lands_in_errors_and_odd_modes_are_scored_like_their_rgb(tmp_path, ray_address):
    from PIL import Image

    corpus = tmp_path / "corpus"
    good = write_corpus(corpus, 5, seed=11)
    odd = odd_images(corpus / "odd")
    (corpus / "ref").mkdir()
    for name, (_, pixels) in odd.items():  # what each odd file must decode to, as plain RGB
        Image.fromarray(pixels).save(corpus / "ref" / f"ref_{name}.png")
    bad = bad_files(corpus / "bad")
    cfg = load_config(write_config(tmp_path, ODD_MODELS, scoring="shard_size = 8"))
    ws = Workspace.from_config(cfg)
    ingested = ingest(ws, [str(corpus)], show_progress=False)
    assert {e["error"] for e in ingested.errors} == {reason for _, reason in bad.values()}
    good[0].unlink()  # a URI that no longer exists by the time it is scored

    with pytest.raises(MadmineError, match="above max_error_fraction"):
        score(cfg, ray_address=ray_address, show_progress=False, max_error_fraction=0.0)
    run = run_records(ws)[-1]
    errors = tables.ERRORS.read(ws, run_id=run["run_id"]).to_pylist()
    assert [(e["uri"], e["error"]) for e in errors] == [(str(good[0]), "file not found")]
    preds = tables.PREDICTIONS.read(ws, run_id=run["run_id"])
    manifest = {r["uri"]: r["image_id"] for r in tables.MANIFEST.read(ws).to_pylist()}
    scored_ids = set(preds.column("image_id").to_pylist())
    assert scored_ids == set(manifest.values()) - {manifest[str(good[0])]}

    version = {m["name"]: m["version"] for m in run["models"]}["target"]

    def target_map(path):
        image_id = image_id_of(path.read_bytes())
        return stored_map(ws, "target", version, image_id)

    for name, (path, _) in odd.items():
        np.testing.assert_array_equal(target_map(path), target_map(corpus / "ref" / f"ref_{name}.png"), err_msg=name)

    # everything was saved: a re-run with a looser budget has nothing left to do and passes
    again = score(cfg, ray_address=ray_address, show_progress=False, max_error_fraction=0.5)
    assert again.shards_scored == 0 and again.errors == 1
    assert pc.sum(pc.list_value_length(preds.column("class_pixels"))).as_py() == preds.num_rows * 4
