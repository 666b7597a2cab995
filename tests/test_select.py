"""`madmine select`: the SQL selection against the pure-Python reference, determinism, and
every bad input a user can give."""

from __future__ import annotations

import hashlib
import json
import random
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

import selection_reference as ref
from madmine import cli_state, metrics, schemas
from madmine.config import Config, load_config
from madmine.errors import MadmineError
from madmine.select import CANDIDATES, run_select
from madmine.workspace import Workspace

CLASSES = ["background", "cat", "dog", "car", "tree", "boat"]
RUN_ID = "run-b"

# ---- a random scored world, written in the workspace layout -------------------------------


@dataclass
class World:
    config: Config
    config_path: Path
    ws: Workspace
    predictions: list[dict]
    pairs: list[dict]
    uris: dict[str, str]
    phash: dict[str, int]
    bounds: dict[int, tuple[float, float] | None]
    rated: list[tuple[int, str]] = field(default_factory=list)
    labelled: set[str] = field(default_factory=set)
    test_set: set[str] = field(default_factory=set)

    def excluded(self, round_: int) -> dict[str, set[str]]:
        run_images = {r["image_id"] for r in self.predictions}
        distance = self.config.selection.phash_distance
        return ref.excluded_images(run_images, self.phash, self.rated, self.labelled, self.test_set, round_, distance)

    def reference(self, round_: int, n3: int, class_ids=None) -> list[dict]:
        excluded = set().union(*self.excluded(round_).values())
        class_ids = class_ids or list(range(1, len(CLASSES)))
        return ref.mad_candidates(
            self.predictions, self.pairs, self.bounds, self.uris, excluded, n3, round_, class_ids, CLASSES
        )


def class_pixels_numpy(label_map: np.ndarray, c: int) -> list[int]:
    return [int(np.sum(label_map == k)) for k in range(c)]


def pair_numpy(a: np.ndarray, b: np.ndarray, c: int) -> tuple[list[int], list[int], float | None]:
    """I_k, U_k and d = 1 - mean_{U_k > 0} I_k / U_k, straight from the definition."""
    valid = (a != 255) & (b != 255)
    inter = [int(np.sum((a == k) & (b == k) & valid)) for k in range(c)]
    union = [int(np.sum(((a == k) | (b == k)) & valid)) for k in range(c)]
    ious = [i / u for i, u in zip(inter, union) if u > 0]
    return inter, union, (1.0 - sum(ious) / len(ious)) if ious else None


def random_map(rng: np.random.Generator, shape: tuple[int, int], c: int) -> np.ndarray:
    """A small map of few classes, so that fractions and discrepancies often tie."""
    present = rng.choice(np.arange(c), size=rng.integers(1, 4), replace=False)
    m = rng.choice(present, size=shape).astype(np.uint8)
    if rng.random() < 0.15:
        m[rng.random(shape) < 0.2] = 255
    return m


def perturb(rng: np.random.Generator, m: np.ndarray, c: int) -> np.ndarray:
    out = m.copy()
    flip = rng.random(m.shape) < rng.uniform(0.0, 0.6)
    out[flip] = rng.integers(0, c, size=int(flip.sum()))
    return out


def write_run(ws, run_id, created_at, status, rows_pred, rows_pair, shard_size, committed=True, rng=None):
    models = sorted({(r["model"], r["role"]) for r in rows_pred})
    ws.put_json(
        ws.path("runs", run_id, "run.json"),
        {
            "run_id": run_id,
            "created_at": created_at,
            "status": status,
            "classes": CLASSES,
            "models": [{"name": m, "role": role, "version": "v1"} for m, role in models],
            "shard_size": shard_size,
        },
    )
    images = sorted({r["image_id"] for r in rows_pred})
    if rng is not None:
        rng.shuffle(images)
    for s, start in enumerate(range(0, len(images), shard_size)):
        chunk = set(images[start : start + shard_size])
        shard = f"{s:05d}"
        pred = [r for r in rows_pred if r["image_id"] in chunk]
        pair = [r for r in rows_pair if r["image_id"] in chunk]
        if rng is not None:
            rng.shuffle(pred)
            rng.shuffle(pair)
        ws.write_parquet(ws.path("tables", "predictions", run_id, f"{shard}.parquet"), pa.Table.from_pylist(pred, schemas.PREDICTIONS))
        ws.write_parquet(ws.path("tables", "pairs", run_id, f"{shard}.parquet"), pa.Table.from_pylist(pair, schemas.PAIRS))
        if committed:
            ws.put_json(ws.shard_marker(run_id, shard), {"rows": len(chunk)})


def make_rows(rng, image_ids, competitors, run_id):
    c = len(CLASSES)
    shapes = [(4, 4), (3, 5), (4, 6), (2, 8)]
    preds, pairs = [], []
    for n, image_id in enumerate(image_ids):
        shape = shapes[rng.integers(len(shapes))]
        target = random_map(rng, shape, c)
        if n == 0:
            target[:] = 255  # no valid pixel: d is NULL for every pair, the image never ranks
        maps = {"target": target} | {j: perturb(rng, target, c) for j in competitors}
        for model, m in maps.items():
            role = "target" if model == "target" else "competitor"
            counts = class_pixels_numpy(m, c)
            assert counts == metrics.class_pixels(m, c).tolist()
            entropy = None if rng.random() < 0.1 else round(float(rng.uniform(0, 2)), 1)
            msp = None if rng.random() < 0.1 else round(float(rng.uniform(0.3, 1)), 1)
            preds.append(
                dict(run_id=run_id, image_id=image_id, model=model, model_version="v1", role=role,
                     height=shape[0], width=shape[1], class_pixels=counts, mean_entropy=entropy, mean_msp=msp)
            )
        for j in competitors:
            inter, union, d = pair_numpy(target, maps[j], c)
            i2, u2, d2 = metrics.pair_summary(target, maps[j], c)
            assert inter == i2.tolist() and union == u2.tolist() and d == d2
            pairs.append(
                dict(run_id=run_id, image_id=image_id, target_version="v1", competitor=j, competitor_version="v1",
                     intersection=inter, union=union, d=d)
            )
    return preds, pairs


def quartile_bounds(preds: list[dict]) -> dict[int, tuple[float, float] | None]:
    """Bounds that land exactly on fractions present in the data (inclusivity is tested)."""
    bounds = {}
    for k in range(1, len(CLASSES)):
        fractions = sorted(
            r["class_pixels"][k] / (r["height"] * r["width"])
            for r in preds
            if r["role"] == "target" and r["class_pixels"][k] > 0
        )
        if k == len(CLASSES) - 1 or not fractions:
            bounds[k] = None  # a class no labelled image shows: it forms no group
        else:
            bounds[k] = (fractions[len(fractions) // 5], fractions[(len(fractions) * 4) // 5])
    return bounds


def write_bounds(ws, bounds):
    rows = [dict(class_id=0, class_name=CLASSES[0], p=0.2, q=0.9, n_images=3)]
    for k, b in bounds.items():
        rows.append(dict(class_id=k, class_name=CLASSES[k], p=b and b[0], q=b and b[1], n_images=0 if b is None else 5))
    schema = pa.schema([("class_id", pa.int32()), ("class_name", pa.string()), ("p", pa.float64()),
                        ("q", pa.float64()), ("n_images", pa.int64())])
    ws.write_parquet(ws.path("tables", "bounds", "bounds.parquet"), pa.Table.from_pylist(rows, schema))


def config_text(workspace: str, maps_dir: Path, competitors, selection: str = "", storage: str = "") -> str:
    models = '[[models]]\nname = "target"\nrole = "target"\nmaps = "{m}"\n'.format(m=maps_dir)
    for j in competitors:
        models += f'\n[[models]]\nname = "{j}"\nrole = "competitor"\nmaps = "{maps_dir}"\n'
    return (
        f'[workspace]\nuri = "{workspace}"\n\n{storage}\n[classes]\nnames = {json.dumps(CLASSES)}\n\n'
        f"{models}\n[selection]\n{textwrap.dedent(selection)}\n"
    )


def build_world(
    folder: Path,
    seed: int = 0,
    n_images: int = 70,
    competitors=("fcn", "psp", "lraspp"),
    workspace: str | None = None,
    storage: str = "",
    selection: str = "",
    shard_size: int = 16,
    shuffle: bool = False,
    extras: bool = True,
) -> World:
    """A scored run of random maps, plus the decoys selection must ignore."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    maps_dir = folder / "maps"
    maps_dir.mkdir(exist_ok=True)
    workspace = workspace or str(folder / "work")
    path = folder / "madmine.toml"
    path.write_text(config_text(workspace, maps_dir, competitors, selection, storage))
    config = load_config(path)
    ws = Workspace.from_config(config)

    ids = [hashlib.sha1(f"{seed}-{i}".encode()).hexdigest()[:16] for i in range(n_images)]
    preds, pairs = make_rows(rng, ids, competitors, RUN_ID)
    order = random.Random(seed) if shuffle else None
    write_run(ws, RUN_ID, "2026-01-02T00:00:00+00:00", "complete", preds, pairs, shard_size, rng=order)

    uris = {i: f"s3://corpus/{i}.jpg" for i in ids}
    phash = {i: int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2)) for i in ids}
    if extras:
        # decoys: an uncommitted shard, an older complete run, a newer unfinished run
        ghosts = [f"ghost{i}" for i in range(5)]
        g_pred, g_pair = make_rows(rng, ghosts, competitors, RUN_ID)
        for r in g_pair:
            r["d"] = 1.0
        ws.write_parquet(ws.path("tables", "predictions", RUN_ID, "99999.parquet"), pa.Table.from_pylist(g_pred, schemas.PREDICTIONS))
        ws.write_parquet(ws.path("tables", "pairs", RUN_ID, "99999.parquet"), pa.Table.from_pylist(g_pair, schemas.PAIRS))
        old_pred, old_pair = make_rows(np.random.default_rng(seed + 100), ids[:30], competitors, "run-a")
        write_run(ws, "run-a", "2026-01-01T00:00:00+00:00", "complete", old_pred, old_pair, shard_size)
        new_pred, new_pair = make_rows(np.random.default_rng(seed + 200), ids[:30], competitors, "run-c")
        write_run(ws, "run-c", "2026-01-03T00:00:00+00:00", "running", new_pred, new_pair, shard_size)
        # duplicates: identical hashes, hashes 1 and 2 bits apart, and one image at two uris
        phash[ids[5]] = phash[ids[6]] = phash[ids[7]]
        phash[ids[9]] = phash[ids[8]] ^ 1
        phash[ids[11]] = phash[ids[10]] ^ 0b101
        phash[ids[12]] = None
        uris[ids[3]] = "s3://corpus/a-first-copy.jpg"

    manifest = [
        dict(image_id=i, uri=uris[i], bytes=100, width=8, height=8, phash=phash[i], ingested_at=None) for i in ids
    ]
    if extras:
        manifest.append(dict(manifest[3], uri="s3://corpus/z-second-copy.jpg"))
    half = len(manifest) // 2
    ws.write_parquet(ws.path("tables", "manifest", "part-0.parquet"), pa.Table.from_pylist(manifest[:half], schemas.MANIFEST))
    ws.write_parquet(ws.path("tables", "manifest", "part-1.parquet"), pa.Table.from_pylist(manifest[half:], schemas.MANIFEST))

    bounds = quartile_bounds(preds)
    write_bounds(ws, bounds)
    world = World(config, path, ws, preds, pairs, uris, phash, bounds)
    if extras:
        world.rated = [(0, ids[20]), (0, ids[21]), (1, ids[22])]
        world.labelled = {ids[23], ids[24]}
        world.test_set = {ids[25]}
        ratings = [dict(round=r, image_id=i, rater="ann", score=2, created_at=None) for r, i in world.rated]
        ws.write_parquet(ws.path("tables", "ratings", "round-0.parquet"), pa.Table.from_pylist(ratings))
        labels = [dict(image_id=i, mask_uri=f"m/{i}.png", source="cvat", round=0, created_at=None) for i in world.labelled]
        ws.write_parquet(ws.path("tables", "labels", "labels.parquet"), pa.Table.from_pylist(labels))
        tests = [dict(round=1, image_id=i) for i in world.test_set]
        ws.write_parquet(ws.path("tables", "testsets", "round-1.parquet"), pa.Table.from_pylist(tests))
    return world


REF_COLUMNS = ["round", "image_id", "uri", "competitor", "direction", "class_id", "class_name", "class_fraction", "d", "rank"]


def selected(table: pa.Table, columns=REF_COLUMNS) -> list[dict]:
    return table.select(columns).to_pylist()


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
    assert data == Path(again.path).read_bytes() == Path(other.path).read_bytes()
    assert (tmp_path / "out-a.parquet").read_bytes() == data == (tmp_path / "out-b.parquet").read_bytes()
    for strategy in ("random", "entropy"):
        x = Path(run_select(a.config, 1, strategy=strategy).path).read_bytes()
        y = Path(run_select(b.config, 1, strategy=strategy).path).read_bytes()
        assert x == y


def test_candidates_file_has_the_contract_columns(world):
    result = run_select(world.config, 0)
    table = pq.read_table(result.path)
    assert table.schema.names[:10] == REF_COLUMNS[:6] + ["class_name", "class_fraction", "d", "rank"]
    assert table.schema == CANDIDATES
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
    w.ws.remove(w.ws.path("tables", "manifest"), recursive=True)
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
    w.ws.remove(w.ws.path("tables", "bounds"), recursive=True)
    with pytest.raises(MadmineError, match=r"no size bounds.*run `madmine bounds LABELS_DIR`"):
        run_select(w.config, 0)


def test_bounds_of_other_classes(tmp_path):
    w = build_world(tmp_path, extras=False)
    table = pq.read_table(w.ws.path("tables", "bounds", "bounds.parquet"))
    table = table.set_column(1, "class_name", pa.array(["background", "cat", "dog", "car", "tree", "ship"]))
    w.ws.write_parquet(w.ws.path("tables", "bounds", "bounds.parquet"), table)
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
    for f in w.ws.table_files("predictions", RUN_ID):
        t = pq.read_table(f)
        t = t.set_column(t.schema.get_field_index("mean_entropy"), "mean_entropy", pa.nulls(t.num_rows, pa.float64()))
        w.ws.write_parquet(f, t)
    with pytest.raises(MadmineError, match="entropy baseline needs the target's mean_entropy.*--strategy random"):
        run_select(w.config, 0, strategy="entropy")


# ---- the command line -------------------------------------------------------------------


def cli_app() -> typer.Typer:
    """madmine's app once it carries these commands; until then one with the same --config."""
    from madmine.cli import app

    if any(c.name == "select" for c in app.registered_commands):
        return app
    stand_in = typer.Typer()

    @stand_in.callback()
    def _global(config: Path = typer.Option(Path("madmine.toml"), "--config")) -> None:
        cli_state.set_config_path(config)

    from madmine.cli_select import register

    register(stand_in)
    return stand_in


def invoke(args: list[str]):
    result = CliRunner().invoke(cli_app(), args, env={"COLUMNS": "200"})
    return result, result.stdout + (result.stderr or "")


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
    assert (world.ws.path("tables", "candidates", "round-1-mad.parquet"))


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
    from madmine.rating import store

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
    from worlds import write_corpus

    from madmine.cli import app as main_app
    from test_bounds import write_labels

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
    manifest = ws.read_table("manifest").to_pylist()
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
    bounds_rows = pq.read_table(ws.path("tables", "bounds", "bounds.parquet")).to_pylist()
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
