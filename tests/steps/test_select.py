"""`madmine select`: the SQL selection against the pure-Python reference, determinism, and
every bad input a user can give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import selection_reference as ref
from madmine import tables
from madmine.config import load_config
from madmine.errors import MadmineError
from madmine.steps import select as select_step
from madmine.steps.select import run_select
from madmine.workspace import Workspace
from selection_world import (
    CLASSES,
    REF_COLUMNS,
    RUN_ID,
    World,
    build_world,
    class_pixels_numpy,
    invoke,
    pair_numpy,
    perturb,
    random_map,
    selected,
    write_run,
)

# ---- a random scored world, written in the workspace layout -------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("world"))


# ---- the SQL against the reference ------------------------------------------------------


@pytest.mark.parametrize("round_, n3", [(0, 3), (1, 2), (2, 25)])
def test_sql_selection_equals_reference(world, round_, n3):
    result = run_select(world.config, round_, n3=n3)
    expected = world.reference(round_, n3)
    assert len(expected) > 20  # the world is rich enough to test something
    assert selected(result.table) == expected
    assert set(result.table.column("strategy").to_pylist()) == {"mad"}
    assert set(result.table.column("run_id").to_pylist()) == {RUN_ID}
    excluded = world.excluded(round_)
    assert result.excluded == {reason: len(images) for reason, images in excluded.items()}
    assert result.excluded_images == len(set().union(*excluded.values()))
    assert result.scored_images == 70


@pytest.mark.parametrize("round_, n3", [(0, 3), (1, 25)])
def test_a_run_ranked_part_by_part_under_a_small_memory_limit_equals_the_reference(tmp_path, monkeypatch, round_, n3):
    """Large runs are ranked a few shards at a time, each part's top n3 ranked again (the path
    10M images take): the same candidates as the reference, ties at the n3-th place included,
    under a small DuckDB memory limit with a spill folder of the user's choosing."""
    spill = tmp_path / "spill"
    spill.mkdir()
    w = build_world(tmp_path / "w", seed=3, n_images=120, shard_size=8, shuffle=True,
                    selection=f'memory_limit = "64MiB"\nspill_directory = "{spill}"')
    whole = run_select(w.config, round_, n3=n3)
    monkeypatch.setattr(select_step, "PART_IMAGES", 20)  # 6 parts of 2-3 shards
    parts = run_select(w.config, round_, n3=n3)
    assert selected(parts.table) == selected(whole.table) == w.reference(round_, n3)
    assert parts.table.equals(whole.table)
    assert list(spill.iterdir()) == []  # the spill folder is cleaned up


def test_run_parts_keep_each_shard_whole():
    preds = [f"/w/tables/predictions/r/s{k:02d}.parquet" for k in range(10)]
    pairs = [f"/w/tables/pairs/r/s{k:02d}.parquet" for k in range(10) if k != 4]  # s04 has no pairs
    parts = select_step.run_parts(preds, pairs, 3)
    assert [len(p) for p, _ in parts] == [4, 4, 2]
    for p, q in parts:
        assert {x.rsplit("/", 1)[1] for x in q} <= {x.rsplit("/", 1)[1] for x in p}
    assert sorted(x for p, _ in parts for x in p) == preds and sorted(x for _, q in parts for x in q) == pairs


def test_reference_world_exercises_the_rules(world):
    """The random world really holds ties, boundary fractions, NULL d and exclusions."""
    rows = world.reference(0, 25)
    keys = [(r["competitor"], r["direction"], r["class_id"], r["d"]) for r in rows]
    assert len(keys) > len(set(keys))  # tied d inside a group, broken by image_id
    fractions_at_bounds = [r for r in rows if r["class_fraction"] in world.bounds[r["class_id"]]]
    assert fractions_at_bounds  # the inclusive bounds matter
    assert world.bounds[len(CLASSES) - 1] is None and all(r["class_id"] != len(CLASSES) - 1 for r in rows)
    null_d = {p["image_id"] for p in world.pairs if p["d"] is None}
    assert null_d and not null_d & {r["image_id"] for r in rows}
    assert all(r["class_id"] >= 1 for r in rows)
    assert world.excluded(1)["near_duplicate"] and world.excluded(1)["rated"]


@pytest.mark.parametrize("seed", [1, 2])
def test_sql_equals_reference_other_worlds(tmp_path, seed):
    w = build_world(tmp_path, seed=seed, n_images=90, competitors=("b", "a"), selection="phash_distance = 2\nn3 = 4")
    result = run_select(w.config, 1)
    assert selected(result.table) == w.reference(1, 4)
    assert len(w.excluded(1)["near_duplicate"]) == 4  # two of three identical hashes, 1 and 2 bits apart


def test_class_subset_equals_reference(world):
    result = run_select(world.config, 0, n3=5, classes=["dog", "cat"])
    expected = world.reference(0, 5, class_ids=[1, 2])
    assert selected(result.table) == expected
    assert set(result.table.column("class_name").to_pylist()) == {"cat", "dog"}


@pytest.mark.parametrize("strategy", ["entropy", "msp", "random"])
def test_baselines_equal_reference_with_mad_budget(world, strategy):
    mad = run_select(world.config, 1, n3=2)
    result = run_select(world.config, 1, n3=2, strategy=strategy)
    excluded = set().union(*world.excluded(1).values())
    expected = ref.baseline_candidates(strategy, world.predictions, world.uris, excluded, mad.num_images, 1, CLASSES, 0)
    assert result.budget == mad.num_images
    assert result.num_images == min(mad.num_images, len(expected)) == len(expected)
    assert selected(result.table, REF_COLUMNS + ["score"]) == expected
    assert set(result.table.column("strategy").to_pylist()) == {strategy}


def test_random_baseline_depends_on_seed(tmp_path):
    a = build_world(tmp_path / "a", extras=False)
    b = build_world(tmp_path / "b", extras=False, selection="seed = 7")
    ids_a = run_select(a.config, 0, strategy="random").table.column("image_id").to_pylist()
    ids_b = run_select(b.config, 0, strategy="random").table.column("image_id").to_pylist()
    assert len(ids_a) == len(ids_b) and ids_a != ids_b


# ---- determinism ------------------------------------------------------------------------


def test_same_input_gives_byte_identical_candidates(tmp_path):
    """Re-running, and writing the same rows in other shards and orders, changes no byte."""
    a = build_world(tmp_path / "a", seed=3, shard_size=16)
    b = build_world(tmp_path / "b", seed=3, shard_size=7, shuffle=True)
    first = run_select(a.config, 1, out=str(tmp_path / "out-a.parquet"))
    again = run_select(a.config, 1)
    other = run_select(b.config, 1, out=str(tmp_path / "out-b.parquet"))
    path_a = Path(first.path)
    assert path_a.name == "round-1-mad.parquet"
    data = path_a.read_bytes()
    assert data == Path(again.path).read_bytes() == (tmp_path / "out-a.parquet").read_bytes()
    # other shards: the same rows, each naming the shard (the map-store pack) that holds its image
    assert first.table.drop_columns(["shard"]).equals(other.table.drop_columns(["shard"]))
    assert (tmp_path / "out-b.parquet").read_bytes() == Path(other.path).read_bytes()
    for strategy in ("random", "entropy"):
        x, y = run_select(a.config, 1, strategy=strategy), run_select(b.config, 1, strategy=strategy)
        assert x.table.drop_columns(["shard"]).equals(y.table.drop_columns(["shard"]))
        assert Path(x.path).read_bytes() == Path(run_select(a.config, 1, strategy=strategy).path).read_bytes()


def test_candidates_file_has_the_contract_columns(world):
    result = run_select(world.config, 0)
    table = pq.read_table(result.path)
    assert table.schema.names[:10] == REF_COLUMNS[:6] + ["class_name", "class_fraction", "d", "rank"]
    assert table.schema == tables.CANDIDATES.schema
    assert {"round", "image_id", "uri", "competitor", "direction", "class_id", "class_fraction", "d", "rank"} <= set(
        table.schema.names
    )


# ---- bad input --------------------------------------------------------------------------


def test_no_scored_run(tmp_path):
    w = build_world(tmp_path, extras=False)
    w.ws.remove(w.ws.path("runs", RUN_ID, "run.json"))
    with pytest.raises(MadmineError, match="no scored run.*run `madmine score` first"):
        run_select(w.config, 0)


def test_unfinished_or_unknown_run_id(world):
    with pytest.raises(MadmineError, match="run 'run-c' is not complete.*madmine score --resume"):
        run_select(world.config, 0, run_id="run-c")
    with pytest.raises(MadmineError, match="no scoring run 'nope'.*run-a, run-b, run-c"):
        run_select(world.config, 0, run_id="nope")


def test_older_run_by_id_uses_its_own_rows(world):
    result = run_select(world.config, 0, run_id="run-a")
    assert set(result.table.column("run_id").to_pylist()) == {"run-a"}
    assert result.scored_images == 30


def test_empty_corpus(tmp_path):
    w = build_world(tmp_path / "a", extras=False)
    w.ws.remove(w.ws.path(tables.MANIFEST.folder), recursive=True)
    with pytest.raises(MadmineError, match="empty corpus.*madmine ingest"):
        run_select(w.config, 0)
    w = build_world(tmp_path / "b", extras=False)
    write_run(w.ws, "run-z", "2027-01-01T00:00:00+00:00", "complete", [], [], 16)
    with pytest.raises(MadmineError, match="empty corpus: run 'run-z'.*madmine score"):
        run_select(w.config, 0)


@pytest.mark.parametrize("n3", [0, -3])
def test_n3_must_be_positive(world, n3):
    with pytest.raises(MadmineError, match="n3 must be > 0.*--n3 25"):
        run_select(world.config, 0, n3=n3)


def test_bounds_missing(tmp_path):
    w = build_world(tmp_path, extras=False)
    w.ws.remove(w.ws.path(tables.BOUNDS.folder), recursive=True)
    with pytest.raises(MadmineError, match=r"no size bounds.*run `madmine bounds LABELS_DIR`"):
        run_select(w.config, 0)


def test_bounds_of_other_classes(tmp_path):
    w = build_world(tmp_path, extras=False)
    table = pq.read_table(tables.BOUNDS.path(w.ws))
    table = table.set_column(1, "class_name", pa.array(["background", "cat", "dog", "car", "tree", "ship"]))
    w.ws.write_parquet(tables.BOUNDS.path(w.ws), table)
    with pytest.raises(MadmineError, match="bounds table was computed for classes.*re-run `madmine bounds"):
        run_select(w.config, 0)


def test_class_name_not_in_config(world):
    with pytest.raises(MadmineError, match="class 'dgo' is not in the config \\(did you mean 'dog'\\?\\)"):
        run_select(world.config, 0, classes=["dgo"])
    with pytest.raises(MadmineError, match="background class"):
        run_select(world.config, 0, classes=["background"])


def test_bad_round_and_strategy(world):
    with pytest.raises(MadmineError, match="--round must be >= 0"):
        run_select(world.config, -1)
    with pytest.raises(MadmineError, match="unknown strategy 'mda'.*mad, entropy, msp, random"):
        run_select(world.config, 0, strategy="mda")


def test_entropy_baseline_without_entropy(tmp_path):
    w = build_world(tmp_path, extras=False)
    for f in tables.PREDICTIONS.files(w.ws, run_id=RUN_ID):
        t = pq.read_table(f)
        t = t.set_column(t.schema.get_field_index("mean_entropy"), "mean_entropy", pa.nulls(t.num_rows, pa.float64()))
        w.ws.write_parquet(f, t)
    with pytest.raises(MadmineError, match="entropy baseline needs the target's mean_entropy.*--strategy random"):
        run_select(w.config, 0, strategy="entropy")


# ---- the command line -------------------------------------------------------------------


def test_cli_select_writes_table_and_prints_summary(world, tmp_path):
    out = tmp_path / "m.parquet"
    result, text = invoke(["--config", str(world.config_path), "select", "--round", "1", "--n3", "2", "--out", str(out)])
    assert result.exit_code == 0, text
    expected = world.reference(1, 2)
    assert selected(pq.read_table(out)) == expected
    images = len({r["image_id"] for r in expected})
    assert f"|M| = {images} images" in text
    assert "per class" in text and "dog" in text and "per competitor" in text and "overlap" in text
    assert "selected in both directions" in text
    assert "excluded before ranking" in text and "near_duplicate" in text
    assert (tables.CANDIDATES.path(world.ws, round=1, strategy="mad"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n3", "0"], "n3 must be > 0 (images kept per group), got 0: pass --n3 25 or fix [selection] n3"),
        (["--class", "zebra"], "class 'zebra' is not in the config"),
        (["--run-id", "run-c"], "not complete"),
    ],
)
def test_cli_select_bad_input_exits_with_message(world, args, message):
    result, text = invoke(["--config", str(world.config_path), "select", "--round", "0", *args])
    assert result.exit_code != 0
    assert message in " ".join(text.split())
    assert "Traceback" not in text


def test_rating_events_exclude_even_before_their_table_exists(tmp_path):
    from madmine.steps.rating import store

    w = build_world(tmp_path, extras=False)
    first = run_select(w.config, 1, n3=3)
    top = first.table.column("image_id")[0].as_py()
    store.record(w.ws, 0, top, "ann", None)  # out-of-domain vote in round 0, never materialised
    second = run_select(w.config, 1, n3=3)
    assert top not in second.table.column("image_id").to_pylist()
    assert second.excluded["rated"] == 1
    assert run_select(w.config, 0, n3=3).excluded["rated"] == 0  # same-round votes do not exclude


# ---- end to end: ingest + score (maps models on Ray) + bounds + select -------------------


def test_end_to_end_through_ingest_and_score_on_ray(tmp_path, ray_address):
    """Maps models make every prediction exact: the reference reads the PNGs directly."""
    from PIL import Image

    from madmine.cli import app as main_app
    from selection_world import write_labels
    from worlds import write_corpus

    rng = np.random.default_rng(11)
    c = len(CLASSES)
    paths = write_corpus(tmp_path / "corpus", 24, seed=5)
    names = ("target", "fcn", "psp")
    maps: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    for p in paths:
        shape = (int(rng.integers(3, 7)), int(rng.integers(3, 7)))
        target = random_map(rng, shape, c)
        for n in names:
            m = target if n == "target" else perturb(rng, target, c)
            (tmp_path / "maps" / n).mkdir(parents=True, exist_ok=True)
            Image.fromarray(m, "L").save(tmp_path / "maps" / n / f"{p.stem}.png")
            maps[n][p.stem] = m
    models = "".join(
        f'[[models]]\nname = "{n}"\nrole = "{"target" if n == "target" else "competitor"}"\nmaps = "maps/{n}/"\n\n'
        for n in names
    )
    config_path = tmp_path / "madmine.toml"
    config_path.write_text(
        f'[workspace]\nuri = "work/"\n\n[classes]\nnames = {json.dumps(CLASSES)}\n\n{models}'
        "[scoring]\nshard_size = 10\n\n[selection]\nn3 = 2\n"
    )
    runner = CliRunner()
    for args in (["ingest", str(tmp_path / "corpus")], ["score", "--ray-address", ray_address]):
        result = runner.invoke(main_app, ["--config", str(config_path), *args], env={"RAY_AUTH_MODE": "disabled"})
        assert result.exit_code == 0, result.output
    write_labels(tmp_path / "labels")
    out = tmp_path / "m.parquet"
    for args in (["bounds", str(tmp_path / "labels")], ["select", "--round", "0", "--out", str(out)]):
        result, text = invoke(["--config", str(config_path), *args])
        assert result.exit_code == 0, text

    config = load_config(config_path)
    ws = Workspace.from_config(config)
    manifest = tables.MANIFEST.read(ws).to_pylist()
    stem_of = {r["image_id"]: Path(r["uri"]).stem for r in manifest}
    preds, pairs = [], []
    for image_id, stem in stem_of.items():
        target = maps["target"][stem]
        for n in names:
            m = maps[n][stem]
            preds.append(dict(image_id=image_id, model=n, role="target" if n == "target" else "competitor",
                              height=m.shape[0], width=m.shape[1], class_pixels=class_pixels_numpy(m, c)))
            if n != "target":
                inter, union, d = pair_numpy(target, m, c)
                pairs.append(dict(image_id=image_id, competitor=n, d=d))
    bounds_rows = pq.read_table(tables.BOUNDS.path(ws)).to_pylist()
    bounds = {r["class_id"]: None if r["p"] is None else (r["p"], r["q"]) for r in bounds_rows if r["class_id"] >= 1}
    uris = {r["image_id"]: r["uri"] for r in manifest}
    phash = {r["image_id"]: r["phash"] for r in manifest}
    excluded = set().union(*ref.excluded_images(set(uris), phash, [], set(), set(), 0, 0).values())
    expected = ref.mad_candidates(preds, pairs, bounds, uris, excluded, 2, 0, list(range(1, c)), CLASSES)
    assert len(expected) >= 10
    assert selected(pq.read_table(out)) == expected


@pytest.mark.parametrize("value", [-1, 17])
def test_phash_distance_is_checked_in_the_config(tmp_path, value):
    from madmine.config import ConfigError

    with pytest.raises(ConfigError, match=r"phash_distance must be within \[0, 16\] bits"):
        build_world(tmp_path, extras=False, selection=f"phash_distance = {value}")


# ---- what excludes an image: the re-entry setting and other strategies' S ----------------


def test_rated_images_reenter_when_asked_and_other_strategies_labels_never_exclude(tmp_path):
    """[selection] exclude_rated = false: an image rated in an earlier round may enter M again unless a
    rater marked it out of domain. Labels drawn for another strategy's S (a baseline's) never exclude
    an image from MAD's M: MAD selects the same with or without baselines."""
    from madmine.steps.rating import store

    default = build_world(tmp_path / "default")
    reenter = build_world(tmp_path / "reenter", selection="exclude_rated = false")
    (_, kept), (_, ood), _ = default.rated
    baseline_only, mad_labelled = sorted(default.labelled)
    for w in (default, reenter):
        store.record(w.ws, 0, kept, "ann", 2)
        store.record(w.ws, 0, ood, "ann", None)  # out of domain: out for good
        tables.SELECTED.write(w.ws, pa.Table.from_pylist([{"round": 0, "image_id": baseline_only, "uri": "u", "rank": 1}]),
                              round=0, strategy="entropy")
        w.rated = [(0, kept), (0, ood)]
        w.labelled = {mad_labelled}  # baseline_only is labelled for entropy's S alone
    reenter.rated = [(0, ood)]
    results = {}
    for name, w in (("default", default), ("reenter", reenter)):
        result = run_select(w.config, 1, n3=25)
        assert selected(result.table) == w.reference(1, 25), name
        assert result.excluded == {reason: len(images) for reason, images in w.excluded(1).items()}
        results[name] = result.excluded
    assert results["default"]["rated"] == 2 and results["reenter"]["rated"] == 1
    assert results["default"]["labelled"] == results["reenter"]["labelled"] == 1
    # a baseline's own selection does exclude the images of its own S (labelled for it)
    own = run_select(default.config, 1, n3=2, strategy="entropy")
    assert own.excluded["labelled"] == 2
