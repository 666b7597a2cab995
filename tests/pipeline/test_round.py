"""`madmine round`: every step, waiting points for people, interruption at each step
boundary and in the middle of a step, resumed by simply running the command again."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from configs import write_config
from madmine import tables
from madmine.completion import round_markers, shard_markers
from madmine.config import load_config
from madmine.pipeline.round import STEP_NAMES, Round
from madmine.steps.ingest import ingest
from madmine.workspace import Workspace
from round_world import MODELS, rate_everything, round_config
from worlds import true_mask, write_corpus


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


def test_round_waits_for_people_resumes_at_each_boundary_and_completes(tmp_path, ray_train):
    write_corpus(tmp_path / "corpus", 18, seed=40)
    cfg, s0_labels = round_config(tmp_path)
    ws = Workspace.from_config(cfg)
    ingest(ws, [str(tmp_path / "corpus")], show_progress=False)

    def fresh():  # a new process each time: nothing carried over but the workspace
        return Round(cfg, 0, ray_address=ray_train)

    rnd = fresh()
    assert rnd.run(until="score") is None
    assert rnd.record["steps"]["score"]["status"] == "done" and "select" not in rnd.record["steps"]

    waiting = fresh().run()  # no size bounds yet: the operator must act
    assert waiting.step == "select" and "bounds LABELS_DIR" in waiting.commands[0]
    from madmine.steps.bounds import run_bounds

    run_bounds(cfg, str(s0_labels))

    rnd = fresh()
    waiting = rnd.run()
    assert rnd.record["steps"]["select"]["status"] == "done"
    assert waiting.step == "rate" and waiting.who == "the raters"
    rate_everything(ws, cfg, 0)

    rnd = fresh()
    waiting = rnd.run()
    steps = rnd.record["steps"]
    assert steps["testset"]["status"] == "done" and steps["S"]["status"] == "done" and steps["S"]["counts"]["S"] == 4
    assert not ({r["image_id"] for r in tables.TESTSETS.read(ws).to_pylist()}
                & {r["image_id"] for r in tables.SELECTED.read(ws, round=0, strategy="mad").to_pylist()})
    assert waiting.step == "annotate"
    export_dir = Path(ws.path("exports", "round-0-s-coco"))
    assert (export_dir / "annotations.json").exists()
    annotate_export(ws, export_dir, cfg)

    rnd = fresh()
    assert rnd.run(until="finetune") is None
    assert rnd.record["steps"]["finetune"]["status"] == "done" and "test_labels" not in rnd.record["steps"]

    waiting = fresh().run()
    assert waiting.step == "test_labels"
    annotate_export(ws, Path(ws.path("exports", "round-0-test-coco")), cfg)

    rnd = fresh()
    assert rnd.run() is None and rnd.complete, rnd.record["steps"]
    assert [s for s in STEP_NAMES if rnd.record["steps"][s]["status"] != "done"] == []
    registry = ws.get_json(ws.path("rounds", "round-0.json"))
    report = registry["steps"]["report"]["counts"]["report"]
    assert report.endswith(".html")
    # the round's evaluate step measured what `madmine evaluate` measures: selection quality too, shown in the report
    quality = tables.SELECTION_QUALITY.read(ws)
    assert quality is not None and "mad" in quality.column("strategy").to_pylist()
    assert registry["steps"]["evaluate"]["counts"]["strategies"] == quality.num_rows
    page = Path(report).read_text()
    assert "Selection quality against ground truth" in page and "precision@" in page
    models = tables.MODELS.read(ws)
    assert models is not None and 0 in models.column("round").to_pylist()
    round0 = next(r for r in models.to_pylist() if r["round"] == 0)
    assert registry["steps"]["finetune"]["counts"]["model_version"] == round0["model_version"]  # the version it made
    assert ws.get_json(round_markers(ws, 0).path("finetune"))["model_version"] == round0["model_version"]
    again = fresh()
    assert again.run() is None and again.complete  # a finished round re-run does nothing new
    assert registry["steps"]["finetune"] == again.record["steps"]["finetune"]


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
    assert ws.get_json(ws.path("rounds", "round-0.json"))["steps"]["score"]["status"] == "running"
    done = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = ws.get_json(ws.path("rounds", "round-0.json"))["steps"]
    assert steps["score"]["status"] == "done" and steps["score"]["counts"]["scored_now"] == 24 - 4 * committed
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
    waiting = Round(cfg, 0, ray_address=ray_address, final=True).run()
    assert waiting.step == "rate" and waiting.commands[-1].endswith("round --round 0 --final")
    rate_everything(ws, cfg, 0)

    waiting = Round(cfg, 0, ray_address=ray_address).run()  # a final round stays final
    assert waiting.step == "test_labels" and "blank masks" in waiting.what
    export_dir = Path(ws.path("exports", "round-0-test-coco"))
    assert json.loads((export_dir / "annotations.json").read_text())["annotations"] == []
    annotate_export(ws, export_dir, cfg)

    rnd = Round(cfg, 0, ray_address=ray_address)
    assert rnd.run() is None and rnd.complete and not {"S", "annotate", "finetune"} & set(rnd.record["steps"])
    assert not tables.SELECTED.exists(ws, round=0, strategy=tables.MAD) and tables.MODELS.read(ws) is None
    testset = tables.TESTSETS.read(ws, round=0).to_pylist()
    assert testset and {r["testset"] for r in testset} == {"T(1)"}
    evaluation = tables.EVALUATION.read(ws).to_pylist()
    measured = {(r["testset"], r["testset_index"]) for r in evaluation if r["n_labelled"]}
    assert measured == {("T(0)", 0), ("T(1)", 1)}
    assert {r["n_labelled"] for r in evaluation if r["testset"] == "T(1)"} == {len(testset)}
