"""The arena's paired bootstrap of a mIoU gain, against a plain loop over the same draws."""

from __future__ import annotations

import numpy as np

from madmine_demo.arena import paired_bootstrap


def _rows(rng, model: str, images: int, classes: int, better: float = 0.0) -> list[dict]:
    rows = []
    for k in range(images):
        union = rng.integers(0, 50, classes).astype(float)
        union[rng.random(classes) < 0.4] = 0  # classes absent from this image
        inter = np.minimum(union, np.floor(union * min(1.0, rng.random() + better)))
        rows.append({"model": model, "image_id": f"img{k:03d}", "intersection": inter.tolist(), "union": union.tolist()})
    return rows


def _miou(inter: np.ndarray, union: np.ndarray) -> float:
    ious = [i / u for i, u in zip(inter, union) if u > 0]
    return sum(ious) / len(ious)


def test_gain_and_interval_match_a_loop_over_the_draws():
    rng = np.random.default_rng(3)
    rows = _rows(rng, "base", 40, 5) + _rows(rng, "tuned", 40, 5, better=0.2)
    rng.shuffle(rows)  # the rows' order must not matter: images are paired by id
    value, low, high = paired_bootstrap(rows, "tuned", "base", resamples=200, seed=7)

    def table(model):
        got = sorted((r for r in rows if r["model"] == model), key=lambda r: r["image_id"])
        return np.array([r["intersection"] for r in got]), np.array([r["union"] for r in got])

    (ia, ua), (ib, ub) = table("tuned"), table("base")
    assert value == _miou(ia.sum(0), ua.sum(0)) - _miou(ib.sum(0), ub.sum(0))
    draws = np.random.default_rng(7).integers(0, 40, (200, 40))
    diffs = [_miou(ia[d].sum(0), ua[d].sum(0)) - _miou(ib[d].sum(0), ub[d].sum(0)) for d in draws]
    assert np.isclose(low, np.percentile(diffs, 2.5)) and np.isclose(high, np.percentile(diffs, 97.5))
    assert low <= value <= high


def test_a_model_against_itself_gains_exactly_nothing():
    rows = _rows(np.random.default_rng(0), "a", 20, 4)
    same = [dict(r, model="b") for r in rows]
    assert paired_bootstrap(rows + same, "b", "a", resamples=100) == (0.0, 0.0, 0.0)
