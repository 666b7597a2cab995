"""T(R), rule by rule: each test breaks when its rule is broken."""

from __future__ import annotations

import hashlib
from collections import Counter

import pyarrow as pa
import pytest
from scipy.stats import ks_2samp

import evaluate_world as world
from madmine import tables
from madmine.errors import EvaluationError
from madmine.steps import reads
from madmine.steps.context import StepContext
from madmine.steps.evaluation import testset
from madmine.steps.evaluation.testset import build, main_classes
from madmine.steps.rating import choose, selection, store


def before_s(w):
    """The world as the round has it when T(R+1) is drawn: S(R+1) not chosen yet (earlier rounds' S are)."""
    w.ws.remove(tables.SELECTED.path(w.ws, round=w.round, strategy="mad"))
    return w


@pytest.fixture
def w(tmp_path):
    return before_s(world.build(tmp_path / "w"))


def drawn(result) -> list[str]:
    return result.table.column("image_id").to_pylist()


def test_out_of_domain_images_never_enter(w):
    result = build(w.config, w.ws, w.round, size=1000, per_class=1000)
    ids = set(drawn(result))
    ood = {i for k, i in enumerate(w.ids) if world.ood_image(k)}
    assert ood and not ids & ood
    # everything else that is not in an S entered: the rule, not chance, kept them out
    in_s = set(reads.selected_ids(w.ws))
    assert ids == set(w.ids) - ood - in_s


def test_no_image_of_an_earlier_rounds_s(w):
    result = build(w.config, w.ws, w.round, size=1000, per_class=1000)
    ids = set(drawn(result))
    earlier = {i for k, i in enumerate(w.ids) if k % 11 == 3}
    assert earlier and not ids & earlier
    assert set(result.dropped["in_s"]) == earlier - set(result.dropped.get("out_of_domain", []))


def test_at_most_per_class_images_per_main_class(w):
    result = build(w.config, w.ws, w.round, size=1000, per_class=2)
    counts = Counter(result.table.column("main_class").to_pylist())
    assert max(counts.values()) == 2
    assert len(counts) == len(world.CLASSES) - 1  # every foreground class still gets its two
    # the cap is what limits the set here: without it more images enter
    assert build(w.config, w.ws, w.round, size=1000, per_class=1000, overwrite=True).size > result.size


def test_main_class_is_the_largest_fraction_and_never_background():
    rows = [
        {"image_id": "a", "class_id": 1, "class_fraction": 0.1},
        {"image_id": "a", "class_id": 3, "class_fraction": 0.4},
        {"image_id": "a", "class_id": 2, "class_fraction": 0.4},
        {"image_id": "b", "class_id": 5, "class_fraction": 0.2},
        {"image_id": "b", "class_id": 0, "class_fraction": 0.9},
        {"image_id": "c", "class_id": None, "class_fraction": None},
        {"image_id": "d", "class_id": 0, "class_fraction": 0.5},
    ]
    assert main_classes(rows) == {"a": 2, "b": 5}


def test_main_class_decides_the_cap(w):
    result = build(w.config, w.ws, w.round, size=1000, per_class=1000)
    for row in result.table.to_pylist():
        assert row["main_class"] == w.main_class[row["image_id"]]
        assert row["class_name"] == world.CLASSES[row["main_class"]]


def test_thirty_images_by_default_and_in_the_documented_seeded_order(w):
    result = build(w.config, w.ws, w.round)
    assert result.size == 30
    table = result.table.to_pylist()
    assert [r["position"] for r in table] == list(range(1, 31))
    keys = [hashlib.sha256(f"0:{w.round}:{r['image_id']}".encode()).hexdigest() for r in table]
    assert keys == sorted(keys)
    written = w.ws.read_parquet([tables.TESTSETS.path(w.ws, round=w.round)])
    assert written.column("image_id").to_pylist() == drawn(result)
    assert set(written.column("round").to_pylist()) == {w.round}


def test_deterministic_and_independent_of_row_order(w):
    first = drawn(build(w.config, w.ws, w.round))
    again = drawn(build(w.config, w.ws, w.round, overwrite=True))
    assert again == first
    path = tables.CANDIDATES.path(w.ws, round=w.round, strategy="mad")
    table = w.ws.read_parquet([path])
    w.ws.write_parquet(path, table.take(pa.array(list(range(table.num_rows))[::-1])))
    assert drawn(build(w.config, w.ws, w.round, overwrite=True)) == first
    other_seed = drawn(build(w.config, w.ws, w.round, seed=7, overwrite=True))
    assert other_seed != first and len(other_seed) == 30


def test_unrated_images_and_images_short_of_raters_stay_out(tmp_path):
    w = before_s(world.build(tmp_path / "w", n=40, extra_toml=""))
    path = tables.RATINGS.path(w.ws, round=w.round)
    ratings = w.ws.read_parquet([path]).to_pylist()
    unrated = {w.ids[k] for k in (1, 2, 3)}
    w.ws.write_parquet(path, pa.Table.from_pylist([r for r in ratings if r["image_id"] not in unrated]))
    ids = set(drawn(build(w.config, w.ws, w.round, size=1000, per_class=1000)))
    assert not ids & unrated
    # with min_raters = 3 nobody qualifies (two raters each)
    w3 = before_s(world.build(tmp_path / "w3", n=12, extra_toml="")).config
    strict = type(w3)(**{**w3.__dict__, "rating": type(w3.rating)(min_raters=3)})
    with pytest.raises(EvaluationError, match="unrated"):
        build(strict, world.Workspace.from_config(strict), 1)


def test_refuses_after_s_unless_asked_and_over_an_existing_set(tmp_path):
    w = world.build(tmp_path / "w", n=30)  # S(R+1) chosen before T(R+1)
    with pytest.raises(EvaluationError, match="--after-s"):
        build(w.config, w.ws, w.round)
    this_round = {i for k, i in enumerate(w.ids) if k % 7 == 0}
    assert not set(drawn(build(w.config, w.ws, w.round, after_s=True))) & this_round  # S's images stay out
    with pytest.raises(EvaluationError, match="--force"):
        build(w.config, w.ws, w.round, after_s=True)


def test_drawn_before_s_the_test_set_is_a_uniform_sample_of_the_in_domain_candidates(tmp_path):
    """T(R+1) first, then S(R+1) from the rest: T's mean opinion scores are distributed as those of every
    in-domain candidate it could take (S's lowest ones included), and S keeps its whole budget."""
    w = before_s(world.build(tmp_path / "w", n=240))
    for row in w.ws.read_parquet([tables.RATINGS.path(w.ws, round=w.round)]).to_pylist():
        store.record(w.ws, w.round, row["image_id"], row["rater"], row["score"])
    ctx = StepContext.of(w.config)
    t = testset.run(ctx, testset.TestsetParams(w.round, size=40, per_class=1000))
    s = choose.run(ctx, choose.ChooseParams.from_config(w.config, w.round, n4=40, allow_partial=True))
    t_ids, s_ids = set(drawn(t)), set(s.chosen.table.column("image_id").to_pylist())
    assert len(s_ids) == 40 and not t_ids & s_ids and s.tally.held_for_test == 40
    mos = {i: (a, n) for i, (a, n) in ((r["image_id"], (r["mos"], r["n_ratings"])) for r in s.chosen.table.to_pylist())}
    votes = selection.mos_by_image(reads.votes(w.ws, w.round))
    earlier = set(reads.selected_ids(w.ws, up_to=w.round - 1))
    pool = {i: sum(v) / len(v) for i, (v, ood) in votes.items() if not ood and len(v) >= 1 and i not in earlier}
    t_mos = [pool[i] for i in t_ids]
    assert min(t_mos) < max(a for a, _ in mos.values())  # T holds images as bad as S's: nothing was taken first
    assert ks_2samp(t_mos, list(pool.values())).pvalue > 0.2
    # S is the lowest of what T left; drawn after S (the old order), T could only have taken images scored at
    # least S's highest, and T holds lower ones
    rest = [pool[i] for i in pool if i not in s_ids and i not in t_ids]
    assert min(rest) >= max(a for a, _ in mos.values()) > min(t_mos)


def test_no_image_of_another_rounds_test_set(w):
    taken = w.ids[1:6]
    world.write_testset(w.ws, 0, taken)
    ids = set(drawn(build(w.config, w.ws, w.round, size=1000, per_class=1000)))
    assert not ids & set(taken)


def test_no_candidates_is_a_clear_error(w):
    with pytest.raises(EvaluationError, match="madmine select --round 5"):
        build(w.config, w.ws, 5)


def test_exported_for_labelling_like_s(w, tmp_path):
    from madmine.steps.annotation.exchange import export

    result = build(w.config, w.ws, w.round)
    count, files = export(w.ws, w.config, "coco", tmp_path / "out", w.round, which="test")
    assert count == 30
    exported = sorted(p.stem for p in (tmp_path / "out" / "images").iterdir())
    assert exported == sorted(drawn(result))


def test_vote_events_are_the_source_of_truth(w):
    """A rater's later out-of-domain event counts although the materialised table predates it."""
    k = next(k for k in range(len(w.ids)) if not world.ood_image(k) and k % 7 and k % 11 != 3)
    for row in w.ws.read_parquet([tables.RATINGS.path(w.ws, round=w.round)]).to_pylist():
        store.record(w.ws, w.round, row["image_id"], row["rater"], row["score"])
    store.record(w.ws, w.round, w.ids[k], "ann", None)
    ids = set(drawn(build(w.config, w.ws, w.round, size=1000, per_class=1000)))
    assert w.ids[k] not in ids
