"""Failure-detector metrics and rank correlation against hand-computed cases and brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from madmine import metrics
from madmine.steps.evaluation import srcc
from references import brute_ap, brute_auroc


def test_hand_computed_cases():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    failures = [1, 0, 1, 0, 0]
    assert metrics.precision_at_n(scores, failures, 1) == 1.0
    assert metrics.precision_at_n(scores, failures, 2) == 0.5
    assert metrics.precision_at_n(scores, failures, 3) == pytest.approx(2 / 3)
    assert metrics.precision_at_n(scores, failures, 50) == pytest.approx(2 / 5)
    # failures rank 1st and 3rd of 5: pairs won 3 + 2 of 2 x 3
    assert metrics.auroc(scores, failures) == pytest.approx(5 / 6)
    # precision at each failure: 1/1 and 2/3
    assert metrics.average_precision(scores, failures) == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.auroc([1, 1, 1], [1, 0, 0]) == 0.5
    assert metrics.average_precision([1, 1, 1, 1], [1, 0, 0, 0]) == 0.25
    assert math.isnan(metrics.auroc([1, 2], [1, 1]))
    assert math.isnan(metrics.average_precision([1, 2], [0, 0]))
    with pytest.raises(ValueError):
        metrics.auroc([1, float("nan")], [1, 0])


@pytest.mark.parametrize("seed", range(6))
def test_against_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 40
    scores = rng.integers(0, 8, n).astype(float)  # many ties
    positives = rng.random(n) < 0.3
    positives[0], positives[1] = True, False
    assert metrics.auroc(scores, positives) == pytest.approx(brute_auroc(scores, positives), abs=1e-12)
    assert metrics.average_precision(scores, positives) == pytest.approx(brute_ap(list(scores), list(positives)), abs=1e-12)
    for k in (1, 5, 17):
        order = sorted(range(n), key=lambda i: (-scores[i], i))[:k]
        assert metrics.precision_at_n(scores, positives, k) == pytest.approx(positives[order].mean())


def test_spearman_matches_scipy_and_hand_cases():
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1, 2, 3) vs (1, 3, 2): 1 - 6 * 2 / (3 * 8)
    assert metrics.spearman([0.1, 0.2, 0.3], [5, 9, 7]) == pytest.approx(0.5)
    assert math.isnan(metrics.spearman([1, 1, 1], [1, 2, 3]))
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = rng.integers(0, 5, 12), rng.random(12)
        assert metrics.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)


def test_miou_from_sums_equals_the_accumulated_confusion_matrix():
    rng = np.random.default_rng(1)
    labels = [rng.integers(0, 4, (9, 7)) for _ in range(5)]
    preds = [rng.integers(0, 4, (9, 7)) for _ in range(5)]
    labels[0][0, :] = 255
    total = sum(metrics.confusion(a, b, 4) for a, b in zip(labels, preds))
    sums = [metrics.intersection_union(metrics.confusion(a, b, 4)) for a, b in zip(labels, preds)]
    inter = sum(i for i, _ in sums)
    union = sum(u for _, u in sums)
    assert metrics.miou_from_sums(inter, union) == pytest.approx(metrics.dataset_miou(total))


def test_srcc_curve_on_a_hand_made_ranking():
    """Three models, four images of one class (I/U per image). On the first image the
    ranking is reversed; from the third image on it is the full set's."""
    inter = {"a": [[1], [9], [9], [9]], "b": [[2], [5], [5], [5]], "c": [[3], [1], [1], [1]]}
    union = {m: [[10]] * 4 for m in inter}
    ks, rhos = srcc.curve({m: np.array(v) for m, v in inter.items()}, {m: np.array(v) for m, v in union.items()})
    assert ks == [1, 2, 3, 4]
    # full: a 28/40 > b 17/40 > c 6/40; first image: c > b > a; first two: a 10 > b 7 > c 4
    assert rhos == pytest.approx([-1.0, 1.0, 1.0, 1.0])
    inter["c"] = [[3], [6], [1], [1]]  # first two: a 10, c 9, b 7 -> a, c, b
    ks, rhos = srcc.curve({m: np.array(v) for m, v in inter.items()}, {m: np.array(v) for m, v in union.items()})
    assert rhos[1] == pytest.approx(0.5)
    for models in itertools.permutations("abc", 1):
        with pytest.raises(ValueError):
            srcc.curve({m: np.array(inter[m]) for m in models}, {m: np.array(union[m]) for m in models})


def test_srcc_against_a_reference_of_the_first_images_as_fig_7():
    """Fig. 7's protocol: the ranking on a reference of the first N images against the ranking on
    k < N of them. Here the whole set ranks b > a > c but its first four images rank a > b > c, so
    the same first two images agree fully with the reference and only half with the whole set."""
    inter = {"a": [[1], [9], [9], [9], [0], [0]], "b": [[2], [5], [5], [5], [10], [10]], "c": [[3], [1], [1], [1], [10], [10]]}
    union = {m: [[10]] * 6 for m in inter}
    i, u = ({m: np.array(v) for m, v in d.items()} for d in (inter, union))
    # first image: c > b > a; first two and three: a > b > c (10, 7, 4 and 19, 12, 5)
    ks, rhos = srcc.curve(i, u, ks=[1, 2, 3], reference=4)
    assert ks == [1, 2, 3] and rhos == pytest.approx([-1.0, 1.0, 1.0])
    _, whole = srcc.curve(i, u, ks=[2])
    assert whole == pytest.approx([0.5])  # a > b > c against b > a > c
    _, drawn = srcc.curve(i, u, ks=[4], reference=4, draws=5)  # every 4-subset of 4 images is the reference
    assert drawn == pytest.approx([1.0])
    with pytest.raises(ValueError, match="larger than the reference"):
        srcc.curve(i, u, ks=[5], reference=4)
    with pytest.raises(ValueError, match="needs 7 labelled images"):
        srcc.curve(i, u, reference=7)
    assert srcc.parse_ks("20..23") == [20, 21, 22, 23] and srcc.parse_ks("5,10") == [5, 10]
    with pytest.raises(ValueError, match="20..39"):
        srcc.parse_ks("twenty")
