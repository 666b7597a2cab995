"""`select --strategy learned | hybrid`: the failure predictor fitted on earlier rounds' ratings.

Checked against an independent computation: the features from the world's rows with numpy
loops (not sql/features.sql), the logistic regression by Newton's method (not scipy's
L-BFGS), AUROC by counting pairs (not ranks), the hybrid's groups by the pure-Python
reference of MAD with the predicted failure as the ranking key.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

import selection_reference as ref
from madmine import tables
from madmine.errors import MadmineError
from madmine.steps.context import StepContext
from madmine.steps.failure_predictor import Predictor, fit, held_out, near_duplicate_groups
from madmine.steps.learned import FEATURES
from madmine.steps.rating import choose
from madmine.steps.select import run_select
from selection_world import CLASSES, REF_COLUMNS, build_world, invoke, selected

# ---- independent references ----------------------------------------------------------------


def features_numpy(world) -> dict[str, np.ndarray]:
    """image_id -> the FEATURES of sql/features.sql, from the world's rows."""
    target = {r["image_id"]: r for r in world.predictions if r["role"] == "target"}
    competitors: dict[str, list[dict]] = {}
    for r in world.predictions:
        if r["role"] == "competitor":
            competitors.setdefault(r["image_id"], []).append(r)
    ds: dict[str, list[float]] = {}
    for p in world.pairs:
        if p["d"] is not None:
            ds.setdefault(p["image_id"], []).append(p["d"])

    def fractions(row):
        return np.asarray(row["class_pixels"], dtype=float) / (row["height"] * row["width"])

    def tv(a, b):
        return 0.5 * np.abs(fractions(a) - fractions(b)).sum()

    out = {}
    for image_id, t in target.items():
        f = fractions(t)
        d = ds.get(image_id, [])
        comps = sorted(competitors[image_id], key=lambda r: r["model"])
        out[image_id] = np.array([
            max(d) if d else np.nan, np.mean(d) if d else np.nan, min(d) if d else np.nan,
            np.nan if t["mean_entropy"] is None else t["mean_entropy"],
            np.nan if t["mean_msp"] is None else t["mean_msp"],
            1 - f[0], f[1:].max(), float((f[1:] > 0).sum()),
            np.mean([tv(t, c) for c in comps]),
            np.mean([tv(a, b) for a, b in itertools.combinations(comps, 2)]),
        ])
    return out


def newton_probability(x_fit, y_fit, x_new, l2=1.0):
    """The same objective (mean log-loss + l2/(2n)|w|^2 on mean-filled, standardised features)
    solved by Newton's method."""
    mean = np.nanmean(x_fit, axis=0)
    mean = np.where(np.isnan(mean), 0.0, mean)
    filled = np.where(np.isnan(x_fit), mean, x_fit)
    std = filled.std(axis=0)
    scale = np.where(std > 1e-12, std, 1.0)
    z = np.c_[(filled - mean) / scale, np.ones(len(y_fit))]
    n, theta = len(y_fit), np.zeros(z.shape[1])
    penalty = np.r_[np.where(std > 1e-12, l2, 1e6), 0.0] / n  # a constant column gets no weight
    for _ in range(50):
        p = 1 / (1 + np.exp(-z @ theta))
        grad = z.T @ (p - y_fit) / n + penalty * theta
        hess = (z.T * (p * (1 - p))) @ z / n + np.diag(penalty)
        theta -= np.linalg.solve(hess, grad)
    new = np.where(np.isnan(x_new), mean, x_new)
    return 1 / (1 + np.exp(-(np.c_[(new - mean) / scale, np.ones(len(new))] @ theta)))


def auroc_by_pairs(scores, positives) -> float:
    pos = [s for s, p in zip(scores, positives) if p]
    neg = [s for s, p in zip(scores, positives) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


# ---- a world with a rated round 0 ----------------------------------------------------------


@pytest.fixture(scope="module")
def rated_world(tmp_path_factory):
    """Round 0's MAD candidates rated: failures mostly where d is high, with a tenth flipped,
    one image voted out of domain (it teaches nothing)."""
    world = build_world(tmp_path_factory.mktemp("learned"), n_images=300)
    m0 = sorted(set(run_select(world.config, 0, n3=5).table.column("image_id").to_pylist()))
    feats = features_numpy(world)
    d = np.array([feats[i][0] for i in m0])
    cut = np.nanmedian(d)
    rng = np.random.default_rng(7)
    ratings, mos = [], {}
    for k, image_id in enumerate(m0):
        failure = (d[k] > cut) != (rng.random() < 0.1)
        scores = [1, 2] if failure else [4, 3]
        if k == 3:
            scores = [4, None]  # out of domain: dropped
        for rater, score in zip(("ann", "bob"), scores):
            ratings.append(dict(round=0, image_id=image_id, rater=rater, score=score, created_at=None))
        if None not in scores:
            mos[image_id] = float(np.mean(scores))
    world.ws.write_parquet(tables.RATINGS.path(world.ws, round=0),
                           pa.Table.from_pylist(ratings, tables.RATINGS.schema))
    world.rated = [(0, i) for i in m0]
    world.mos = mos
    world.features = feats
    return world


def groups_by_loops(ids, world) -> list[str]:
    """Near-duplicate groups (perceptual hashes within the config's distance, transitively), each named by
    its smallest image id: by repeated passes until nothing merges."""
    distance = world.config.selection.phash_distance
    group = {i: i for i in ids}
    changed = True
    while changed:
        changed = False
        for a in ids:
            for b in ids:
                if bin(world.phash[a] ^ world.phash[b]).count("1") <= distance and group[a] != group[b]:
                    group[a] = group[b] = min(group[a], group[b])
                    changed = True
    return [group[i] for i in ids]


def examples_of(world):
    ids = sorted(world.mos)
    x = np.array([world.features[i] for i in ids])
    y = np.array([world.mos[i] <= 2.5 for i in ids])
    return ids, x, y


def test_learned_selection_ranks_by_the_predictor_fitted_on_the_ratings(rated_world):
    w = rated_world
    ids, x, y = examples_of(w)
    assert 20 < len(ids) and 0.3 < y.mean() < 0.7  # the ratings teach something
    result = run_select(w.config, 1, strategy="learned", n3=5)
    mad = run_select(w.config, 1, n3=5)
    assert result.budget == mad.num_images > 20

    excluded = set().union(*w.excluded(1).values())
    eligible = sorted(i for i in w.features if i not in excluded)
    p = newton_probability(x, y, np.array([w.features[i] for i in eligible]))
    expected = sorted(zip(eligible, p), key=lambda t: (-t[1], t[0]))[: result.budget]
    got = result.table.to_pylist()
    assert [r["image_id"] for r in got] == [i for i, _ in expected]
    np.testing.assert_allclose([r["score"] for r in got], [q for _, q in expected], atol=1e-6)
    assert [r["rank"] for r in got] == list(range(1, result.budget + 1))
    assert {r["strategy"] for r in got} == {"learned"}

    trained = result.trained
    assert (trained.examples, trained.failures, trained.rounds, trained.out_of_domain) == (len(ids), int(y.sum()), [0], 1)
    groups = groups_by_loops(ids, w)
    out = held_out(groups, 0.25, 0)
    assert 0 < out.sum() < len(ids) and trained.heldout == out.sum()
    p_out = newton_probability(x[~out], y[~out], x[out])
    assert trained.auroc == pytest.approx(auroc_by_pairs(p_out, y[out]), abs=1e-9)
    d_out = x[out][:, 0]
    keep = ~np.isnan(d_out)
    assert trained.auroc_d == pytest.approx(auroc_by_pairs(d_out[keep], y[out][keep]), abs=1e-9)

    saved = w.ws.get_json(w.ws.path("learned", "round-1.json"))
    predictor = Predictor.from_dict(saved["predictor"])
    top = np.array([w.features[i] for i, _ in expected[:5]])
    np.testing.assert_allclose(predictor.probability(top), [q for _, q in expected[:5]], atol=1e-6)
    assert saved["examples"] == len(ids) and tuple(saved["predictor"]["features"]) == FEATURES


def test_hybrid_ranks_mad_groups_by_predicted_failure(rated_world):
    w = rated_world
    ids, x, y = examples_of(w)
    result = run_select(w.config, 1, strategy="hybrid", n3=3)
    all_ids = sorted(w.features)
    p = dict(zip(all_ids, newton_probability(x, y, np.array([w.features[i] for i in all_ids]))))
    excluded = set().union(*w.excluded(1).values())
    expected = ref.mad_candidates(w.predictions, w.pairs, w.bounds, w.uris, excluded, 3, 1,
                                  list(range(1, len(CLASSES))), CLASSES, score=p)
    assert len(expected) > 20
    assert selected(result.table) == expected
    np.testing.assert_allclose(result.table.column("score").to_pylist(),
                               [p[r["image_id"]] for r in expected], atol=1e-6)
    assert set(result.table.column("strategy").to_pylist()) == {"hybrid"}
    mad = selected(run_select(w.config, 1, n3=3).table)
    assert mad != selected(result.table)  # the predictor changes which members a group keeps
    assert {(r["competitor"], r["direction"], r["class_id"]) for r in mad} == {
        (r["competitor"], r["direction"], r["class_id"]) for r in expected}
    assert REF_COLUMNS[0] == "round"


def test_cli_prints_the_predictors_auroc(rated_world):
    result, out = invoke(["--config", str(rated_world.config_path), "select", "--round", "1", "--strategy", "learned"])
    assert result.exit_code == 0, out
    assert "failure predictor: learned from" in out and "AUROC on" in out and "d alone" in out
    assert "(learned, budget" in out


def test_learned_needs_ratings_of_an_earlier_round(tmp_path):
    world = build_world(tmp_path, extras=False)
    with pytest.raises(MadmineError, match=r"learn from the ratings of earlier rounds.*0 rated in-domain images.*--strategy mad"):
        run_select(world.config, 0, strategy="learned")
    result, out = invoke(["--config", str(world.config_path), "select", "--round", "0", "--strategy", "hybrid"])
    assert result.exit_code != 0 and "Rate an earlier round" in out and "Traceback" not in out
    assert not world.ws.exists(tables.CANDIDATES.path(world.ws, round=0, strategy="hybrid"))


# ---- the predictor itself -------------------------------------------------------------------


def test_fit_equals_newtons_method_with_missing_and_constant_features():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4)) * [1, 10, 0.1, 1]
    x[:, 3] = 2.0  # constant: no weight
    y = (x[:, 0] + 0.1 * x[:, 1] + rng.normal(size=300) > 0)
    x[rng.random(300) < 0.1, 2] = np.nan  # missing: the training mean
    names = ("a", "b", "c", "k")
    predictor = fit(x, y, names)
    new = rng.normal(size=(50, 4))
    new[::7, 2] = np.nan
    np.testing.assert_allclose(predictor.probability(new), newton_probability(x, y, new), atol=1e-6)
    assert predictor.weights[3] == 0.0
    assert Predictor.from_dict(predictor.to_dict()) == predictor


def test_fit_refuses_one_kind_of_example_and_bad_shapes():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="failures and non-failures"):
        fit(x, np.zeros(5, bool), ("a", "b"))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        fit(x, np.array([0, 1, 0, 1, 0], bool), ("a", "b", "c"))
    predictor = fit(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1], bool), ("a",))
    with pytest.raises(ValueError, match=r"\(n, 1\) array of a"):
        predictor.probability(np.zeros((2, 2)))


def test_near_duplicates_share_a_group_and_a_side_of_the_split():
    ids = [f"i{k}" for k in range(6)]
    hashes = [0b0000, 0b0001, 0b1110_0000, 0b1110_0011, None, 0b0001]
    assert near_duplicate_groups(ids, hashes, 0) == ["i0", "i1", "i2", "i3", "i4", "i1"]
    assert near_duplicate_groups(ids, hashes, 1) == ["i0", "i0", "i2", "i3", "i4", "i0"]
    assert near_duplicate_groups(ids, hashes, 2) == ["i0", "i0", "i2", "i2", "i4", "i0"]
    groups = near_duplicate_groups([f"img{k}" for k in range(400)], [k // 2 for k in range(400)], 0)
    side = held_out(groups, 0.5, 0)
    assert (side[0::2] == side[1::2]).all() and 0.3 < side.mean() < 0.7  # copies never straddle the split


def test_held_out_split_is_fixed_by_image_and_seed():
    ids = [f"img{i}" for i in range(2000)]
    part = held_out(ids, 0.25, 0)
    assert 0.22 < part.mean() < 0.28
    assert (held_out(ids[:500] + ["new"], 0.25, 0)[:500] == part[:500]).all()  # adding images moves none
    assert (held_out(ids, 0.25, 1) != part).any()


def test_out_of_domain_is_learned_and_keeps_the_budget_on_images_people_can_label(tmp_path):
    """Images raters marked out of domain teach a second output, P(out of domain); learned ranks by
    P(failure) x (1 - P(out of domain)), each fitted as Newton's method fits it, and picks fewer images
    that look out of domain than P(failure) alone would."""
    world = build_world(tmp_path, n_images=300)
    m0 = sorted(set(run_select(world.config, 0, n3=5).table.column("image_id").to_pylist()))
    feats = features_numpy(world)
    d = np.array([feats[i][0] for i in m0])
    cue = np.array([feats[i][8] for i in m0])  # the target's class areas far from the competitors': "out of domain" here
    ood = cue > np.quantile(cue, 0.8)
    ratings = []
    for k, image_id in enumerate(m0):
        scores = [None, 3] if ood[k] else ([1, 2] if d[k] > np.nanmedian(d) else [4, 3])
        ratings += [dict(round=0, image_id=image_id, rater=r, score=s, created_at=None) for r, s in zip(("ann", "bob"), scores)]
    world.ws.write_parquet(tables.RATINGS.path(world.ws, round=0), pa.Table.from_pylist(ratings, tables.RATINGS.schema))
    world.rated = [(0, i) for i in m0]
    result = run_select(world.config, 1, strategy="learned", n3=5)
    assert result.trained.out_of_domain == int(ood.sum()) and result.trained.ood is not None

    x = np.array([feats[i] for i in m0])
    fail = np.array([d[k] > np.nanmedian(d) for k in range(len(m0))])
    excluded = set().union(*world.excluded(1).values())
    eligible = sorted(i for i in feats if i not in excluded)
    new = np.array([feats[i] for i in eligible])
    p_fail = newton_probability(x[~ood], fail[~ood], new)
    p_ood = newton_probability(x, ood, new)
    expected = sorted(zip(eligible, p_fail * (1 - p_ood)), key=lambda t: (-t[1], t[0]))[: result.budget]
    got = result.table.to_pylist()
    assert [r["image_id"] for r in got] == [i for i, _ in expected]
    np.testing.assert_allclose([r["score"] for r in got], [q for _, q in expected], atol=1e-6)
    looks_ood = {i for i, q in zip(eligible, p_ood) if q > 0.5}
    by_failure_alone = {i for i, _ in sorted(zip(eligible, p_fail), key=lambda t: (-t[1], t[0]))[: result.budget]}
    assert len(looks_ood & {r["image_id"] for r in got}) < len(looks_ood & by_failure_alone)


def test_rate_select_takes_the_learned_strategies_most_likely_failures(rated_world):
    """`rate select --strategy hybrid` takes the n4 candidates of highest predicted failure, not the tops of
    MAD's groups (hybrid ranks within groups); learned likewise."""
    w = rated_world
    for strategy in ("hybrid", "learned"):
        table = run_select(w.config, 1, strategy=strategy, n3=3).table.to_pylist()
        best = {}
        for r in table:
            best[r["image_id"]] = max(best.get(r["image_id"], -1.0), r["score"])
        expected = [i for i, _ in sorted(best.items(), key=lambda t: (-t[1], t[0]))[:10]]
        s = choose.run(StepContext.of(w.config), choose.ChooseParams(1, strategy=strategy, n4=10))
        assert s.chosen.table.column("image_id").to_pylist() == expected
