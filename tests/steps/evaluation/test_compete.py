"""MAD competitions. The d-ranking proxy: selection by d between two models against an
independent computation, the winner on the labelled images, images waiting for labels, and
labels obtained through a blank annotation export and import. The MAD protocol (per class by
each model's map, size bounds, top n per group, raters' veto, training sets excluded) is tested
in test_compete_protocol.py."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

import evaluate_world as world
from madmine.errors import EvaluationError
from madmine.steps.evaluation import compete as cp
from madmine.steps.reads import selected_ids
from references import reference

C = len(world.CLASSES)


def reference_d(a: np.ndarray, b: np.ndarray) -> float:
    """1 - mean over classes present in either map of |A and B| / |A or B| (no 255 in these maps)."""
    b = world.nearest(b, a.shape)
    ious = []
    for k in range(C):
        union = int(((a == k) | (b == k)).sum())
        if union:
            ious.append(int(((a == k) & (b == k)).sum()) / union)
    return 1 - sum(ious) / len(ious)


@pytest.fixture
def w(tmp_path):
    return world.build(tmp_path / "w", n=30, labelled=lambda k: k % 5 != 1)


def test_selects_top_d_outside_every_s_and_scores_both_models(w):
    comp = cp.compete(w.config, w.ws, "target", "fcn", n=8, protocol="d-ranking")
    trained = set(selected_ids(w.ws))
    pool = [i for i in w.ids if i not in trained]
    expected = sorted(pool, key=lambda i: (-reference_d(w.target_maps[i], w.competitor_maps[i]), i))[:8]
    assert [r["image_id"] for r in comp.selection] == expected
    assert [r["rank"] for r in comp.selection] == list(range(1, 9))
    for r in comp.selection:
        assert r["d"] == pytest.approx(reference_d(w.target_maps[r["image_id"]], w.competitor_maps[r["image_id"]]))
    assert comp.pool == len(pool)

    unlabelled = {w.ids[k] for k in range(30) if k % 5 == 1}
    assert comp.waiting == [i for i in expected if i in unlabelled]
    assert comp.labelled == [i for i in expected if i not in unlabelled]
    miou_a, _, per_image_a = reference(w.target_maps, w.labels, comp.labelled)
    miou_b, _, per_image_b = reference(w.competitor_maps, w.labels, comp.labelled)
    assert comp.miou_a == pytest.approx(miou_a) and comp.miou_b == pytest.approx(miou_b)
    assert comp.per_image_a == pytest.approx(per_image_a) and comp.per_image_b == pytest.approx(per_image_b)
    low, high = bootstrap_by_loops(w.target_maps, w.competitor_maps, w.labels, comp.labelled, seed=w.config.evaluate.seed)
    assert (comp.diff_low, comp.diff_high) == (pytest.approx(low), pytest.approx(high))
    assert low <= miou_a - miou_b <= high
    assert comp.winner == (comp.a.label if low > 0 else comp.b.label if high < 0 else None)
    saved = cp.results(w.ws).to_pylist()
    assert len(saved) == 1 and saved[0]["winner"] == comp.winner and saved[0]["labelled"] == len(comp.labelled)
    assert saved[0]["diff_low"] == pytest.approx(low) and 0 <= saved[0]["sign_p"] <= 1


def bootstrap_by_loops(maps_a, maps_b, labels, ids, seed: int, resamples: int = 2000):
    """The 95% interval of dataset mIoU(A) - mIoU(B) over the same resampled images, one confusion
    matrix per side and draw, counted pixel by pixel (the draws of numpy's generator, as madmine takes them)."""
    import numpy as np
    from PIL import Image

    def confusion(maps, image_id):
        label = labels[image_id]
        pred = np.asarray(Image.fromarray(maps[image_id]).resize(label.shape[::-1], Image.NEAREST))
        conf = np.zeros((C, C), dtype=np.int64)
        for t, p in zip(label.ravel().tolist(), pred.ravel().tolist()):
            if t != 255 and p != 255:
                conf[t, p] += 1
        return conf

    def miou(conf):
        values = []
        for k in range(C):
            union = conf[k, :].sum() + conf[:, k].sum() - conf[k, k]
            if union:
                values.append(conf[k, k] / union)
        return sum(values) / len(values)

    conf_a = [confusion(maps_a, i) for i in ids]
    conf_b = [confusion(maps_b, i) for i in ids]
    draws = np.random.default_rng(seed).integers(0, len(ids), (resamples, len(ids)))
    diffs = [miou(sum(conf_a[j] for j in d)) - miou(sum(conf_b[j] for j in d)) for d in draws]
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def test_the_better_finetuned_version_wins(w):
    better = {i: world.damage(w.labels[i], (16, 32), 0, 0.0, seed=9) for i in w.ids}
    world.add_model_version(w.ws, "target", "ft-mad", better, 1, world.T0 + timedelta(days=1))
    comp = cp.compete(w.config, w.ws, "target@ft-mad", "target", n=10, protocol="d-ranking")
    assert comp.a.version == "ft-mad" and comp.a.origin == "models table"
    assert comp.winner == "target@ft-mad" and comp.miou_a > comp.miou_b and comp.wins_a > comp.wins_b
    assert comp.diff_low > 0 and comp.sign_p < 0.05


def test_no_winner_when_the_interval_holds_zero(w):
    """The same maps under another version name: every draw differs by nothing, so neither wins."""
    world.add_model_version(w.ws, "target", "same", w.target_maps, 1, world.T0 + timedelta(days=1))
    comp = cp.compete(w.config, w.ws, "target@same", "target", n=10, protocol="d-ranking")
    assert comp.labelled and comp.diff_low == comp.diff_high == 0 and comp.winner is None and comp.sign_p == 1.0


def test_selection_is_kept_until_asked_to_select_again(w):
    first = cp.compete(w.config, w.ws, "target", "fcn", n=6, protocol="d-ranking")
    again = cp.compete(w.config, w.ws, "target", "fcn", n=3, protocol="d-ranking")
    assert again.reused and [r["image_id"] for r in again.selection] == [r["image_id"] for r in first.selection]
    fresh = cp.compete(w.config, w.ws, "target", "fcn", n=3, reselect=True, protocol="d-ranking")
    assert not fresh.reused and len(fresh.selection) == 3


def test_waiting_images_are_exported_blank_and_their_labels_imported(w, tmp_path):
    import json

    from annotator import label_export

    comp = cp.compete(w.config, w.ws, "target", "fcn", n=12, protocol="d-ranking")
    assert comp.waiting
    count, files = cp.export(w.config, w.ws, comp, "coco", tmp_path / "out")
    assert count == len(comp.waiting)
    assert sorted(p.stem for p in (tmp_path / "out" / "images").iterdir()) == sorted(comp.waiting)
    doc = json.loads(files[0].read_text())
    assert doc["annotations"] == []  # blank: no mask of A (or B) to anchor the annotator
    assert json.loads((tmp_path / "out" / "madmine-export.json").read_text())["prefill"] is None
    drawn = label_export(w.ws, w.config, tmp_path / "out", lambda i: w.labels[i])
    assert sorted(drawn) == sorted(comp.waiting)
    done = cp.compete(w.config, w.ws, "target", "fcn", protocol="d-ranking")
    assert done.reused and done.waiting == [] and len(done.labelled) == 12
    miou_a, _, _ = reference(w.target_maps, w.labels, done.labelled)
    assert done.miou_a == pytest.approx(miou_a)  # scored on the drawn labels


def test_prefill_is_asked_for_and_names_its_model(w, tmp_path):
    import json

    comp = cp.compete(w.config, w.ws, "target", "fcn", n=12, protocol="d-ranking")
    count, files = cp.export(w.config, w.ws, comp, "coco", tmp_path / "out", prefill="b")
    doc = json.loads(files[0].read_text())
    assert count == len(comp.waiting) and doc["annotations"]
    assert json.loads((tmp_path / "out" / "madmine-export.json").read_text())["prefill"] == comp.b.label


def test_clear_errors(w):
    with pytest.raises(EvaluationError, match="same model"):
        cp.compete(w.config, w.ws, "fcn", "fcn")
    with pytest.raises(EvaluationError, match="not a known model"):
        cp.compete(w.config, w.ws, "target", "nosuch")
    with pytest.raises(EvaluationError, match="unknown protocol"):
        cp.compete(w.config, w.ws, "target", "fcn", protocol="top-d")
    with pytest.raises(EvaluationError, match="finetune --round R --selection entropy"):
        cp.compete(w.config, w.ws, "target@entropy", "target")
