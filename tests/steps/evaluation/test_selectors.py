"""Every selector judged over a pool no selector chose: the measures against independent computations,
and the command on a labelled corpus sample."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from typer.testing import CliRunner

import evaluate_world as world
from madmine import tables
from madmine.cli import app
from madmine.steps.context import StepContext
from madmine.steps.evaluation import sample, selectors


def auroc_by_pairs(s, y) -> float:
    pos, neg = s[y], s[~y]
    return float(np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg]))


def ap_by_thresholds(s, y) -> float:
    """Precision at each failure's rank (scores distinct here), averaged over the failures."""
    order = np.argsort(-s)
    hits = np.cumsum(y[order])
    return float(np.mean([hits[k] / (k + 1) for k in range(len(s)) if y[order][k]]))


def fpr95_by_loop(s, y) -> float:
    for t in sorted(s, reverse=True):
        if (s[y] >= t).mean() >= 0.95:
            return float((s[~y] >= t).mean())
    raise AssertionError("unreachable")


def test_the_measures_equal_independent_computations():
    rng = np.random.default_rng(4)
    n = 400
    ids = [f"i{k:03d}" for k in range(n)]
    miou = rng.uniform(0, 1, n)
    ood = rng.random(n) < 0.1
    score = -miou + rng.normal(0, 0.3, n)  # a selector that mostly ranks failures first
    outcomes = {i: selectors.Outcome(float("nan") if o else m, bool(o)) for i, m, o in zip(ids, miou, ood)}
    judged = selectors.judge(0, {"run_id": "r"}, {"x": dict(zip(ids, score))}, outcomes, budget_m=200, n4=50, tau=0.5,
                             corpus=800, resamples=200, seed=0)
    (row,) = judged.rows
    inside = ~ood
    fail = inside & (miou < 0.5)
    s, y, m = score[inside], fail[inside], miou[inside]
    assert (row["pool"], row["in_domain"], row["failures"], row["k_m"], row["k_n4"]) == (n, inside.sum(), fail.sum(), 100, 25)
    assert row["auroc"] == pytest.approx(auroc_by_pairs(s, y))
    assert row["aupr_error"] == pytest.approx(ap_by_thresholds(s, y))
    assert row["fpr95"] == pytest.approx(fpr95_by_loop(s, y))
    assert row["spearman"] == pytest.approx(spearmanr(s, m).statistic) and row["spearman"] < -0.5
    assert row["pearson"] == pytest.approx(pearsonr(s, m).statistic)
    top = np.argsort(-score)[:100]
    assert row["precision_at_m"] == pytest.approx(fail[top].mean()) and row["ood_at_m"] == pytest.approx(ood[top].mean())
    for key in selectors.WITH_INTERVALS:
        assert row[f"{key}_low"] <= row[key] <= row[f"{key}_high"], key
    assert 0.02 < row["auroc_high"] - row["auroc_low"] < 0.2  # 400 images: an interval of a few points


def test_every_selector_on_a_labelled_corpus_sample_through_the_command(tmp_path):
    w = world.build(tmp_path / "w", n=60, labelled=lambda k: k % 4 != 0)
    world.write_scores(w)
    world.write_testset(w.ws, 0, [w.ids[k] for k in range(1, 60, 4)])
    drawn = sample.run(StepContext.of(w.config), sample.SampleParams(40, seed=3))
    assert drawn.num_rows == 40 and len(set(drawn.column("image_id").to_pylist())) == 40
    result = CliRunner().invoke(app, ["--config", str(w.config_path), "evaluate", "--no-quality", "--selectors",
                                      "--round", "1", "--run-id", "run-1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "selectors of round 1" in text
    assert "AUROC" in text and "left out" in text and "FPR@95%TPR" in text
    rows = {r["selector"]: r for r in tables.SELECTORS.read(w.ws, round=1).to_pylist()}
    assert {"d max", "d mean", f"d {world.COMPETITOR}", "entropy", "max-softmax", "random"} <= set(rows)
    assert rows["learned"]["note"] and rows["mad"]["note"]  # no earlier ratings, no size bounds: named, not fatal
    labelled = {i for k, i in enumerate(w.ids) if k % 4 != 0}
    pool = set(drawn.column("image_id").to_pylist()) & labelled
    assert rows["d max"]["pool"] == len(pool)
    fails = sum(1 for i in pool if image_miou(w.target_maps[i], w.labels[i]) < 0.5)
    assert rows["d max"]["failures"] == fails


def image_miou(pred: np.ndarray, label: np.ndarray) -> float:
    """IoU of every class in the prediction or the label (255 ignored), averaged; the map resized to the label."""
    from PIL import Image

    pred = np.asarray(Image.fromarray(pred).resize(label.shape[::-1], Image.NEAREST))
    valid = (label != 255) & (pred != 255)
    ious = []
    for k in set(np.unique(pred[valid]).tolist()) | set(np.unique(label[valid]).tolist()):
        inter = ((pred == k) & (label == k) & valid).sum()
        union = (((pred == k) | (label == k)) & valid).sum()
        ious.append(inter / union)
    return float(np.mean(ious))
