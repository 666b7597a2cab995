"""`madmine round`: every stage, waiting points for people, interruption at each stage
boundary and in the middle of a stage, resumed by simply running the command again."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from madmine import tables
from madmine.completion import shard_markers
from madmine.config import load_config
from madmine.pipeline.round import STAGES, Round, step_markers
from madmine.steps.ingest import ingest
from madmine.workspace import Workspace
from round_world import MODELS, rate_everything, round_config
from worlds import true_mask, write_config, write_corpus


def annotate_export(ws: Workspace, export_dir: Path, cfg) -> None:
    """The simulated annotator: replaces the pre-annotations of a COCO export with the true masks, imports."""
    from madmine.steps.annotation.coco import ANNOTATIONS, encode
    from madmine.steps.annotation.exchange import import_

    doc = json.loads((export_dir / ANNOTATIONS).read_text())
    manifest = {r["image_id"]: r["uri"] for r in tables.MANIFEST.read(ws).to_pylist()}
    annotations = []
    for image in doc["images"]:
        mask = true_mask(np.asarray(Image.open(manifest[image["image_id"]]).convert("RGB")))
        for k in np.unique(mask).tolist():
            if k:
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": image["id"], "category_id": k, "segmentation": encode(mask == k), "iscrowd": 1}
                )
    doc["annotations"] = annotations
    (export_dir / ANNOTATIONS).write_text(json.dumps(doc))
    import_(ws, cfg, "coco", export_dir, None, True)


def test_round_waits_for_people_resumes_at_each_boundary_and_completes(tmp_path, ray_address):
    write_corpus(tmp_path / "corpus", 18, seed=40)
    cfg, s0_labels = round_config(tmp_path)
    ws = Workspace.from_config(cfg)
    ingest(ws, [str(tmp_path / "corpus")], show_progress=False)

    def fresh():  # a new process each time: nothing carried over but the workspace
        return Round(cfg, 0, ray_address=ray_address)

    status = fresh().run(until="score")
    assert status.stages["score"]["status"] == "done" and "select" not in status.stages

    status = fresh().run()  # no size bounds yet: the operator must act
    assert status.waiting.stage == "select" and "bounds LABELS_DIR" in status.waiting.commands[0]
    from madmine.steps.bounds import run_bounds

    run_bounds(cfg, str(s0_labels))

    status = fresh().run()
    assert status.stages["select"]["status"] == "done"
    assert status.waiting.stage == "rate" and status.waiting.who == "the raters"
    rate_everything(ws, cfg, 0)

    status = fresh().run()
    assert status.stages["S"]["status"] == "done" and status.stages["S"]["counts"]["S"] == 4
    assert status.waiting.stage == "annotate"
    export_dir = Path(ws.path("exports", "round-0-s-coco"))
    assert (export_dir / "annotations.json").exists()
    annotate_export(ws, export_dir, cfg)

    status = fresh().run(until="finetune")
    assert status.stages["finetune"]["status"] == "done" and status.waiting is None
    assert "testset" not in status.stages

    status = fresh().run()
    assert status.waiting.stage == "test_labels"
    annotate_export(ws, Path(ws.path("exports", "round-0-test-coco")), cfg)

    status = fresh().run()
    assert status.complete, status.stages
    assert [s for s in STAGES if status.stages[s]["status"] != "done"] == []
    registry = ws.get_json(ws.path("rounds", "round-0.json"))
    assert registry["stages"]["report"]["counts"]["report"].endswith(".html")
    models = tables.MODELS.read(ws)
    assert models is not None and 0 in models.column("round").to_pylist()
    round0 = next(r for r in models.to_pylist() if r["round"] == 0)
    assert registry["stages"]["finetune"]["counts"]["model_version"] == round0["model_version"]  # the version it made
    assert ws.get_json(step_markers(ws, 0).path("finetune"))["model_version"] == round0["model_version"]
    again = fresh().run()  # a finished round re-run does nothing new
    assert again.complete and registry["stages"]["finetune"] == again.stages["finetune"]


def test_round_killed_in_the_middle_of_scoring_resumes(tmp_path, cli_env):
    write_corpus(tmp_path / "corpus", 24, seed=43)
    models = MODELS.replace("worlds:colour_net", "worlds:slow_colour_net")
    cfg = load_config(write_config(tmp_path, models, scoring="shard_size = 4\nbatch_size = 2"))
    ws = Workspace.from_config(cfg)
    ingest(ws, [str(tmp_path / "corpus")], show_progress=False)
    cmd = [str(Path(sys.executable).parent / "madmine"), "--config", str(cfg.path), "round", "--round", "0", "--until", "select"]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        runs = ws.listdir(ws.path("runs"))
        if runs and len(shard_markers(ws, runs[0]).done()) >= 1:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_id = ws.listdir(ws.path("runs"))[0]
    committed = len(shard_markers(ws, run_id).done())
    assert 1 <= committed < 6
    assert ws.get_json(ws.path("rounds", "round-0.json"))["stages"]["score"]["status"] == "running"
    done = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    stages = ws.get_json(ws.path("rounds", "round-0.json"))["stages"]
    assert stages["score"]["status"] == "done" and stages["score"]["counts"]["scored_now"] == 24 - 4 * committed
    assert len(shard_markers(ws, run_id).done()) == 6


def test_a_final_round_draws_and_measures_the_next_test_set_without_fine_tuning(tmp_path, ray_address):
    """`madmine round --round R --final`: score, select, rate, T(R+1) from M(R) exported blank,
    labels, evaluation; no S, no fine-tuning, no new model version."""
    write_corpus(tmp_path / "corpus", 18, seed=44)
    cfg, s0_labels = round_config(tmp_path)
    ws = Workspace.from_config(cfg)
    ingest(ws, [str(tmp_path / "corpus")], show_progress=False)
    from madmine.steps.bounds import run_bounds

    run_bounds(cfg, str(s0_labels))
    status = Round(cfg, 0, ray_address=ray_address, final=True).run()
    assert status.waiting.stage == "rate" and status.waiting.commands[-1].endswith("round --round 0 --final")
    rate_everything(ws, cfg, 0)

    status = Round(cfg, 0, ray_address=ray_address).run()  # a final round stays final
    assert status.waiting.stage == "test_labels" and "blank masks" in status.waiting.what
    export_dir = Path(ws.path("exports", "round-0-test-coco"))
    assert json.loads((export_dir / "annotations.json").read_text())["annotations"] == []
    annotate_export(ws, export_dir, cfg)

    status = Round(cfg, 0, ray_address=ray_address).run()
    assert status.complete and not {"S", "annotate", "finetune"} & set(status.stages)
    assert not tables.SELECTED.exists(ws, round=0, strategy=tables.MAD) and tables.MODELS.read(ws) is None
    testset = tables.TESTSETS.read(ws, round=0).to_pylist()
    assert testset and {r["testset"] for r in testset} == {"T(1)"}
    evaluation = tables.EVALUATION.read(ws).to_pylist()
    measured = {(r["testset"], r["testset_index"]) for r in evaluation if r["n_labelled"]}
    assert measured == {("T(0)", 0), ("T(1)", 1)}
    assert {r["n_labelled"] for r in evaluation if r["testset"] == "T(1)"} == {len(testset)}
