"""Evaluation numbers against an independent computation: pixel loops written here, a resize
written here, nothing from madmine.metrics."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
from typer.testing import CliRunner

import evaluate_world as world
from madmine.cli import app
from madmine.names import HELD_OUT
from madmine.steps.evaluation import evaluate as ev
from madmine.steps.evaluation.evaluate import Evaluation
from madmine.steps.evaluation.predictions import ModelRef
from madmine.steps.evaluation.testset import build
from references import reference

C = len(world.CLASSES)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    unlabelled = {5, 17}
    w = world.build(root / "w", n=40, labelled=lambda k: k not in unlabelled)
    t0 = [w.ids[k] for k in (2, 3, 10, 11, 13, 20, 22, 30)]
    world.write_testset(w.ws, 0, t0)
    t1 = build(w.config, w.ws, w.round, size=12, after_s=True).table.column("image_id").to_pylist()
    # a fine-tuned version of the target, known by its models-table row and its cached maps
    finetuned = {i: world.damage(w.labels[i], (16, 32), 0, 0.0, seed=3) for i in t0 + t1}
    world.add_model_version(w.ws, "target", "ft-r1", finetuned, 1, world.T0 + timedelta(days=1))
    result = ev.evaluate(w.config, w.ws, show_progress=False)
    ev.save(w.ws, result)
    return w, result, {0: t0, 1: t1}, finetuned


def test_every_model_on_every_test_set_equals_pixel_loops(evaluated):
    w, result, tests, finetuned = evaluated
    assert [r.label.split("@")[0] for r in result.refs] == ["target", "target", "fcn"]
    assert result.refs[0].version == "ft-r1" and result.refs[0].origin == "models table"
    maps = {"ft-r1": finetuned, w.versions["target"]: w.target_maps, w.versions["fcn"]: w.competitor_maps}
    checked = 0
    for ref in result.refs:
        for r, ids in tests.items():
            labelled = [i for i in ids if i in {w.ids[k] for k in range(40) if k not in (5, 17)}]
            cell = result.cell(ref, r)
            assert cell.image_ids == labelled and cell.n_images == len(ids)
            miou, iou, per_image = reference(maps[ref.version], w.labels, labelled)
            assert cell.miou == pytest.approx(miou, abs=1e-12)
            assert cell.per_image_miou == pytest.approx(per_image, abs=1e-12)
            np.testing.assert_allclose(cell.iou, iou, atol=1e-12)
            checked += 1
    assert checked == 6
    # the two numbers differ here: the per-image mean is not the dataset mIoU
    assert any(abs(c.miou - c.per_image_miou) > 1e-3 for c in result.cells.values())


def test_unlabelled_test_images_wait_and_do_not_count(evaluated):
    w, result, tests, _ = evaluated
    waiting = {w.ids[5], w.ids[17]} & set(tests[1])
    assert set(result.waiting[1]) == waiting
    assert result.waiting[0] == []


def test_saved_table_and_table1_layout(evaluated):
    w, result, tests, _ = evaluated
    summary, images = ev.load(w.ws)
    assert summary.num_rows == 6
    rows = {(r["label"], r["testset_round"]): r for r in summary.to_pylist()}
    for ref in result.refs:
        for r in tests:
            cell = result.cell(ref, r)
            row = rows[(ref.label, r)]
            assert row["miou"] == pytest.approx(cell.miou) and row["n_labelled"] == cell.n_labelled
            assert row["per_image_miou"] == pytest.approx(cell.per_image_miou)
            iou = [math.nan if v is None else v for v in row["iou"]]
            np.testing.assert_allclose(iou, cell.iou)
            # per-image rows add up to the accumulated matrix
            mine = [x for x in images.to_pylist() if x["label"] == ref.label and x["testset_round"] == r]
            assert [x["image_id"] for x in sorted(mine, key=lambda x: x["position"])] == cell.image_ids
            np.testing.assert_array_equal(np.sum([x["intersection"] for x in mine], axis=0), row["intersection"])
            np.testing.assert_array_equal(np.sum([x["union"] for x in mine], axis=0), row["union"])
    headers, table = ev.table1(summary)
    # the paper's names: the set drawn from M of round R is T(R+1) (round 0's hand-written set is T(1))
    assert headers == ["T(1)", "T(2)"]
    assert {(r["testset_round"], r["testset"], r["testset_index"]) for r in summary.to_pylist()} == {
        (0, "T(1)", 1), (1, "T(2)", 2)}
    trained = {r["label"]: (r["trained_on"], r["selection"]) for r in summary.to_pylist()}
    assert trained["target@ft-r1"] == ("S(0) + S(1) + S(2) (mad)", "mad")  # fine-tuned in round 1 on MAD's S
    assert trained[f"target@{w.versions['target']}"] == ("S(0)", None)
    assert [label for label, _ in table] == [ref.label for ref in result.refs]
    assert table[0][1] == [rows[(result.refs[0].label, 0)]["miou"], rows[(result.refs[0].label, 1)]["miou"]]


def test_cli_prints_table1_rounds_across_models_down(evaluated):
    w, result, tests, _ = evaluated
    plot = w.root / "srcc.png"
    out = CliRunner().invoke(app, ["--config", str(w.config_path), "evaluate", "--per-class", "--no-quality",
                                   "--srcc-plot", str(plot)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    text = out.output
    assert "Table 1" in text and "per-image mean mIoU" in text
    table1 = text[text.index("Table 1") : text.index("per-image mean mIoU")].splitlines()
    header = next(line for line in table1 if "T(1)" in line)
    assert header.index("T(1)") < header.index("T(2)") and "trained on" in header
    for ref in result.refs:
        line = next(line for line in table1 if ref.label[:20] in line)
        for r in (0, 1):
            assert f"{100 * result.cell(ref, r).miou:.1f}" in line
    waiting = len(result.waiting[1])
    assert waiting and f"T(2): {waiting} of 12 images wait for labels" in text
    assert "IoU per class (%) on T(2)" in text
    assert "SRCC with the T(2) ranking of 3 models on " in text and "images, first k images" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_version_without_maps_or_weights_is_reported_not_fatal(tmp_path):
    w = world.build(tmp_path / "w", n=16)
    world.write_testset(w.ws, 0, w.ids[:4])
    world.add_model_version(w.ws, "target", "lost", {}, 1, world.T0 + timedelta(days=2))
    result = ev.evaluate(w.config, w.ws, show_progress=False)
    lost = next(r for r in result.refs if r.version == "lost")
    assert "no stored map" in result.cell(lost, 0).error
    row = next(r for r in result.summary_table().to_pylist() if r["model_version"] == "lost")
    assert row["miou"] is None and row["error"]
    assert all(result.cell(r, 0).error is None for r in result.refs if r.version != "lost")


def test_no_test_set_is_a_clear_error(tmp_path):
    w = world.build(tmp_path / "w", n=8)
    with pytest.raises(ev.EvaluationError, match="madmine testset"):
        ev.evaluate(w.config, w.ws, show_progress=False)


def test_held_out_t0_of_the_finetune_folders_is_evaluated_first(tmp_path):
    """T(0) as fine-tuning reads it: [finetune] t0_images and t0_labels, matched by file stem."""
    import shutil

    from madmine.images import encode_map_png

    root = tmp_path / "w"
    for sub in ("t0/images", "t0/labels"):
        (root / sub).mkdir(parents=True)
    extra = '[finetune]\nt0_images = "t0/images/"\nt0_labels = "t0/labels/"\n'
    w = world.build(root, n=20, extra_toml=extra)
    held = [2, 7, 11, 16]
    for k in held:
        shutil.copy(root / "corpus" / f"img{k:04d}.png", root / "t0" / "images" / f"img{k:04d}.png")
        (root / "t0" / "labels" / f"img{k:04d}.png").write_bytes(encode_map_png(w.labels[w.ids[k]]))
    world.write_testset(w.ws, 1, w.ids[:5])
    result = ev.evaluate(w.config, w.ws, show_progress=False)
    assert result.rounds == [-1, 1]
    by_world_id = {w.ids[k]: k for k in held}
    for ref, maps in zip(result.refs, (w.target_maps, w.competitor_maps)):
        cell = result.cell(ref, -1)
        assert cell.error is None and cell.n_labelled == len(held)
        ids = [w.ids[k] for k in held]
        miou, _, per_image = reference(maps, w.labels, ids)
        assert cell.miou == pytest.approx(miou, abs=1e-12) and cell.per_image_miou == pytest.approx(per_image, abs=1e-12)
        # held-out images are known by the hash of their bytes, as ingest names them
        assert all(len(i) == 32 and i not in by_world_id for i in cell.image_ids)
    headers, _ = ev.table1(result.summary_table())
    assert headers == ["T(0)", "T(2)"]  # the held-out set is T(0); round 1's set is T(2), never a second "T(0)"


def test_table_1_marks_the_papers_pairing_f_i_on_t_i_plus_1():
    """f(0), the original target, selected M(0), from which T(1) is drawn; the version fine-tuned in round R-1
    selected M(R) and pairs with T(R+1). T(0) pairs with no one; baselines' chains and competitors never."""
    original = ModelRef("target", "v0", "target", None, "config")
    mad = {r: ModelRef("target", f"mad{r}", "target", None, "models table", round=r) for r in (0, 1)}
    entropy = ModelRef("target", "ent0", "target", None, "models table", round=0, selection="entropy")
    competitor = ModelRef("fcn", "c", "competitor", None, "config")
    paired = {(ref.version, r) for ref in (original, *mad.values(), entropy, competitor) for r in (HELD_OUT, 0, 1, 2)
              if Evaluation.paper_pair(ref, r)}
    assert paired == {("v0", 0), ("mad0", 1), ("mad1", 2)}


def test_repair_counts_each_versions_fixed_and_broken_images_against_its_parent_as_counted_here(tmp_path, monkeypatch):
    """Evaluation's repair rows: the version's and its parent's per-image mIoU by the pixel loops of
    references.reference, counted here: failures the version fixes, passing images it breaks."""
    from madmine import tables
    from madmine.steps.context import StepContext
    from madmine.steps.evaluation.run import EvaluateParams, run

    w = world.build(tmp_path / "w", n=24)
    ids = w.ids[:16]
    world.write_testset(w.ws, 0, ids)
    version = {}
    for k, i in enumerate(ids):  # right on the first six, badly damaged on the last five, the parent's elsewhere
        label_map = np.where(w.labels[i] == 255, 0, w.labels[i]).astype(np.uint8)
        version[i] = label_map if k < 6 else world.damage(w.labels[i], (16, 32), k, 3.0, seed=9) if k >= 11 \
            else w.target_maps[i]
    world.add_model_version(w.ws, "target", "ft-r0", version, 0, world.T0 + timedelta(days=1))
    path = tables.MODELS.path(w.ws, model="target", round=0, selection="mad")
    rows = w.ws.read_parquet([path]).to_pylist()
    rows[0]["parent_version"] = w.versions["target"]
    tables.MODELS.write(w.ws, tables.MODELS.from_rows(rows), model="target", round=0, selection="mad")

    result = run(StepContext.of(w.config), EvaluateParams(quality=False))
    parent = [reference(w.target_maps, w.labels, [i])[2] for i in ids]
    child = [reference(version, w.labels, [i])[2] for i in ids]
    failed = [p < 0.5 for p in parent]
    expected = (sum(failed), sum(f and c >= 0.5 for f, c in zip(failed, child)),
                sum(not f for f in failed), sum(not f and c < 0.5 for f, c in zip(failed, child)))
    assert expected[1] > 0 and expected[3] > 0, "the world must give the version something to fix and to break"
    (row,) = [r for r in tables.REPAIR.read_file(w.ws, part="evaluation").to_pylist() if r["set"] == "T(1)"]
    assert (row["failures"], row["fixed"], row["passing"], row["broke"]) == expected
    assert (row["model_version"], row["parent_version"], row["testset_round"]) == ("ft-r0", w.versions["target"], 0)
    assert row["parent_image_miou"] == pytest.approx(np.mean(parent)) and row["image_miou"] == pytest.approx(np.mean(child))
    assert result.repair == tables.REPAIR.read_file(w.ws, part="evaluation").to_pylist()
    from madmine.cli import evaluate as evaluate_cli

    monkeypatch.setattr(evaluate_cli.out, "width", 200)  # its console took its width when first imported
    out = CliRunner().invoke(app, ["--config", str(w.config_path), "evaluate", "--no-quality"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "repair: each fine-tuned version against its parent" in out.output
    assert f"{expected[1]} of {expected[0]} (" in out.output and f"{expected[3]} of {expected[2]} (" in out.output
