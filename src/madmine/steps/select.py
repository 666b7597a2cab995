"""`madmine select`: the likely failures of a round (step 2 of the method, docs/paper.md), in DuckDB.

Python only checks inputs, lists the run's committed files and binds values; every step
of the selection is a file under sql/ (run_inputs, exclusions, groups, ranking,
candidates, and the baselines), so the same selection can be read and re-run by hand.
"""

from __future__ import annotations

import difflib
import itertools
import math
import tempfile
from dataclasses import dataclass, field

import pyarrow as pa

from madmine import duck, objectstore, tables
from madmine.config import Config
from madmine.errors import MadmineError
from madmine.steps import bounds, learned
from madmine.steps.context import StepContext
from madmine.steps.rating import store
from madmine.steps.score.runs import run_records
from madmine.workspace import Workspace, parquet_bytes, write_atomic

STRATEGIES = tables.STRATEGIES
LEARNED = ("learned", "hybrid")  # strategies that rank by a predictor fitted on earlier rounds' ratings
EXCLUSION_REASONS = ("rated", "labelled", "test_set", "near_duplicate")
PART_IMAGES = 1_000_000  # images ranked at a time: a part's joins stay in memory instead of spilling


# Tables that exclude images; before they exist, selection reads them as empty.
OPTIONAL_TABLES = {
    "ratings": pa.schema([("round", pa.int32()), ("image_id", pa.string()), ("score", pa.int8())]),
    "labels": pa.schema([("image_id", pa.string())]),
    "testsets": pa.schema([("round", pa.int32()), ("image_id", pa.string())]),
}


@dataclass
class SelectResult:
    round: int
    strategy: str
    run_id: str
    n3: int
    table: pa.Table
    path: str
    scored_images: int
    excluded: dict[str, int] = field(default_factory=dict)
    excluded_images: int = 0
    budget: int | None = None
    trained: learned.Trained | None = None  # the predictor of the learned and hybrid strategies
    retries: int = 0  # object-store requests retried

    @property
    def num_images(self) -> int:
        return len(set(self.table.column("image_id").to_pylist()))

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


def target_version_of(run: dict) -> str | None:
    return next((m.get("version") for m in run.get("models", []) if m.get("role") == "target"), None)


def pick_run(ws: Workspace, run_id: str | None) -> dict:
    """The run to select from: the one named, or the newest complete one."""
    runs = run_records(ws)
    if run_id is not None:
        for record in runs:
            if record.get("run_id") == run_id:
                if record.get("status") != "complete":
                    raise MadmineError(
                        f"run {run_id!r} is not complete (status {record.get('status')!r}): "
                        "finish it with `madmine score --resume`, or pick another with --run-id"
                    )
                return record
        known = ", ".join(r.get("run_id", "?") for r in runs) or "none"
        raise MadmineError(f"no scoring run {run_id!r} in workspace {ws.uri} (runs: {known})")
    complete = [r for r in runs if r.get("status") == "complete"]
    if not complete:
        raise MadmineError(f"no scored run in workspace {ws.uri}: run `madmine score` first")
    return complete[-1]


def refresh_ratings(ws: Workspace, round_: int) -> None:
    """Rebuild earlier rounds' ratings tables from their events, which are the truth: a
    rating server that died before its shutdown still excludes every vote it accepted."""
    for name in ws.listdir(ws.path("rating", "events")):
        number = name.removeprefix("round-")
        if name.startswith("round-") and number.isdigit() and int(number) < round_:
            store.materialise(ws, int(number))


def class_ids_of(names: list[str] | None, classes: tuple[str, ...]) -> list[int]:
    """Object class ids (k >= 1) of the names given; all object classes when none."""
    if not names:
        return list(range(1, len(classes)))
    ids = []
    for name in names:
        if name not in classes:
            close = difflib.get_close_matches(name, classes, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise MadmineError(f"class {name!r} is not in the config{hint}; [classes] names are {', '.join(classes)}")
        if classes.index(name) == 0:
            raise MadmineError(f"class {name!r} is the background class (id 0): it never forms a group")
        ids.append(classes.index(name))
    return sorted(set(ids))


def other_strategies_s(ws: Workspace, strategy: str) -> pa.Table:
    """Images in the S of another strategy and not in this one's: labelled for that strategy only."""
    from madmine.steps.reads import selected_ids

    own = set(selected_ids(ws, strategy=strategy))
    others = set(selected_ids(ws)) - own
    return pa.table({"image_id": pa.array(sorted(others), pa.string())})


def _run_for(config: Config, ws: Workspace, round_: int, strategy: str, run_id: str | None) -> dict:
    """The run a strategy's round selects from: the one named; else the newest complete run that scored
    the target that round troubleshoots in this strategy's chain (its newest fine-tuned version of an
    earlier round; with none, a version no fine-tuning made). A baseline needs such a run; MAD falls
    back to the newest complete run."""
    if run_id is not None:
        return pick_run(ws, run_id)
    from madmine.steps.train.versions import latest_row, models_rows

    runs = [r for r in run_records(ws) if r.get("status") == "complete"]
    row = None
    if config.finetune.start_from == "latest":
        row = latest_row(ws, config.target.name, before_round=round_, selection=strategy)
    if row is not None:
        matching = [r for r in runs if target_version_of(r) == row["model_version"]]
        wanted = f"the {strategy} version {row['model_version']} (fine-tuned in round {row.get('round')})"
    else:
        fine_tuned = {r.get("model_version") for r in models_rows(ws)}
        matching = [r for r in runs if target_version_of(r) not in fine_tuned]
        wanted = "the target as configured (no fine-tuned version)"
    if matching:
        return matching[-1]
    if strategy != tables.MAD and runs:
        raise MadmineError(
            f"no complete scoring run holds {wanted}, which round {round_} of {strategy} troubleshoots: score it with "
            f"`madmine score --selection {strategy}`, or name a run with --run-id"
        )
    return pick_run(ws, None)


def _open(ws: Workspace, config: Config, run: dict, strategy: str = tables.MAD, spill: str | None = None):
    """A connection holding the run's inputs, checked: corpus, bounds, optional tables; DuckDB
    spills what passes [selection] memory_limit to the folder `spill`."""
    run_id = run["run_id"]
    if not duck.table_exists(ws, "manifest"):
        raise MadmineError(f"empty corpus: workspace {ws.uri} has no manifest; run `madmine ingest SOURCE...` first")
    prediction_files = tables.PREDICTIONS.files(ws, run_id=run_id)
    pair_files = tables.PAIRS.files(ws, run_id=run_id)
    if not prediction_files or not pair_files:
        raise MadmineError(
            f"empty corpus: run {run_id!r} has no committed predictions or pairs; ingest images with "
            "`madmine ingest SOURCE...` and run `madmine score`"
        )
    con = duck.connect(ws, cache_metadata=True, memory_limit=config.selection.memory_limit, spill_directory=spill)
    present = duck.create_views(con, ws, ("manifest", "bounds", *OPTIONAL_TABLES))
    if "bounds" not in present:
        raise MadmineError(f"no size bounds in workspace {ws.uri}: run `madmine bounds LABELS_DIR` first")
    for table, schema in OPTIONAL_TABLES.items():
        if table not in present:
            duck.register_empty(con, table, schema)
    con.register("other_strategies_s", other_strategies_s(ws, strategy))
    bounds.check_classes(con, config.classes)
    duck.bind_run(con, ws, run_id, prediction_files, pair_files)
    scored = con.execute("SELECT count(*) FROM run_images").fetchone()[0]
    if scored == 0:
        raise MadmineError(f"empty corpus: run {run_id!r} scored no images; run `madmine score` on an ingested corpus")
    return con, scored, run_parts(prediction_files, pair_files, math.ceil(scored / PART_IMAGES))


def run_parts(prediction_files: list[str], pair_files: list[str], parts: int) -> list[tuple[list[str], list[str]]]:
    """The run's shard files in `parts` groups of whole shards (a shard's predictions and pairs
    together, as every image's rows are in its shard's files); groups without pairs are left
    out, as none of their images has a d."""
    by_shard: dict[str, list[list[str]]] = {}
    for index, (table, files) in enumerate(((tables.PREDICTIONS, prediction_files), (tables.PAIRS, pair_files))):
        for path in files:
            by_shard.setdefault((table.keys_of(path) or {}).get("shard", path), [[], []])[index].append(path)
    shards = sorted(by_shard)
    size = math.ceil(len(shards) / max(1, parts)) or 1
    out = []
    for start in range(0, len(shards), size):
        group = [by_shard[s] for s in shards[start : start + size]]
        predictions = [p for files, _ in group for p in files]
        pairs = [p for _, files in group for p in files]
        if predictions and pairs:
            out.append((predictions, pairs))
    return out


def _mad(con, ws: Workspace, parts: list, ranking: str = "ranking") -> pa.Table:
    """MAD's M (ranking by d), or the hybrid's (ranking_hybrid: by predicted failure within MAD's groups).

    A run of more than PART_IMAGES images is ranked by d a part at a time, each part's joins
    in memory, and the parts' winners once more (ranking_merge): the same top n3 as one pass."""
    for step in ("groups", ranking):
        duck.run_file(con, step)
    if ranking == "ranking" and len(parts) > 1:
        winners = []
        for prediction_files, pair_files in parts:
            duck.bind_run_files(con, ws, prediction_files, pair_files)
            winners.append(con.sql("SELECT * EXCLUDE (score, rank) FROM ranked").to_arrow_table())
        duck.bind_run_files(con, ws, [p for files, _ in parts for p in files], [p for _, files in parts for p in files])
        con.register("part_winners", pa.concat_tables(winners))
        duck.run_file(con, "ranking_merge")
    return duck.run_file(con, "candidates").to_arrow_table()


def _baseline(con, strategy: str, budget: int) -> pa.Table:
    if strategy in ("entropy", "msp"):
        column = "mean_entropy" if strategy == "entropy" else "mean_msp"
        known = con.execute("SELECT count(mean_entropy), count(mean_msp) FROM run_predictions WHERE role = 'target'")
        if known.fetchone()[0 if strategy == "entropy" else 1] == 0:
            raise MadmineError(
                f"the {strategy} baseline needs the target's {column}, which this run does not hold "
                "(a maps model gives no probabilities): use --strategy random, or score a network target"
            )
    duck.set_variables(con, budget=budget, strategy=strategy)
    duck.run_file(con, f"baseline_{strategy}")
    return duck.run_file(con, "baseline_candidates").to_arrow_table()


@dataclass(frozen=True)
class SelectParams:
    """One selection: the round, the strategy, and what may override [selection]."""

    round: int
    strategy: str = tables.MAD
    n3: int | None = None  # default: [selection] n3
    run_id: str | None = None  # default: the round's run (the newest complete one)
    classes: tuple[str, ...] | None = None  # only these classes form groups
    out: str | None = None  # also write the candidates here


def run(ctx: StepContext, params: SelectParams) -> SelectResult:
    """The selection step: round `params.round`'s candidates by `params.strategy` -> tables/candidates."""
    return run_select(ctx.config, params.round, strategy=params.strategy, n3=params.n3, run_id=params.run_id,
                      classes=list(params.classes) if params.classes else None, out=params.out, on_step=ctx.say)


def run_select(
    config: Config,
    round_: int,
    strategy: str = "mad",
    n3: int | None = None,
    run_id: str | None = None,
    classes: list[str] | None = None,
    out: str | None = None,
    on_step=None,
) -> SelectResult:
    """Select round `round_`'s candidates and write them to the workspace (and `out`).

    `on_step(text)` is told which step runs (the CLI shows it), as DuckDB's own progress
    bar would write into the output.
    """
    step = on_step or (lambda text: None)
    retried = objectstore.retries()
    if round_ < 0:
        raise MadmineError(f"--round must be >= 0, got {round_}")
    if strategy not in STRATEGIES:
        raise MadmineError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    n3 = config.selection.n3 if n3 is None else n3
    if n3 <= 0:
        raise MadmineError(f"n3 must be > 0 (images kept per group), got {n3}: pass --n3 25 or fix [selection] n3")
    class_ids = class_ids_of(classes, config.classes)
    ws = Workspace.from_config(config)
    run = _run_for(config, ws, round_, strategy, run_id)
    if list(run.get("classes", config.classes)) != list(config.classes):
        raise MadmineError(
            f"run {run['run_id']!r} was scored with classes {run.get('classes')} but the config lists "
            f"{list(config.classes)}: select from a run of this class list (--run-id) or re-score"
        )
    step(f"reading run {run['run_id']}")
    refresh_ratings(ws, round_)
    with tempfile.TemporaryDirectory(prefix="madmine-spill-", dir=config.selection.spill_directory) as spill:
        con, scored, parts = _open(ws, config, run, strategy, spill)
        try:
            duck.set_variables(
                con,
                round=round_,
                exclude_rated=config.selection.exclude_rated,
                n3=n3,
                class_ids=class_ids,
                class_names=list(config.classes),
                phash_distance=config.selection.phash_distance,
                seed=config.selection.seed,
            )
            step("exclusions (rated, labelled, test sets, near-duplicates)")
            duck.run_file(con, "exclusions")
            step(f"groups and top-{n3} ranking over {scored} images")
            duck.set_variables(con, strategy=tables.MAD)
            mad = _mad(con, ws, parts)
            budget, trained = None, None
            if strategy in LEARNED:
                step(f"fitting the failure predictor on the ratings of rounds before {round_}")
                trained = learned.fitted(ws, config, round_)
                con.register("predicted", learned.predicted(con, trained))
            if strategy == "mad":
                table = mad
            elif strategy == "hybrid":
                step(f"hybrid: MAD's groups ranked by predicted failure, top {n3}")
                duck.set_variables(con, strategy=strategy)
                table = _mad(con, ws, parts, "ranking_hybrid")
            else:
                budget = len(set(mad.column("image_id").to_pylist()))
                step(f"{strategy} baseline, budget {budget}")
                table = _baseline(con, strategy, budget)
            table = table.select(tables.CANDIDATES.schema.names).cast(tables.CANDIDATES.schema)
            reasons = dict(con.execute("SELECT reason, count(DISTINCT image_id) FROM exclusions GROUP BY reason").fetchall())
            excluded_images = con.execute("SELECT count(DISTINCT image_id) FROM exclusions").fetchone()[0]
        finally:
            con.close()

    step("writing candidates")
    data = parquet_bytes(table)
    path = tables.CANDIDATES.path(ws, round=round_, strategy=strategy)
    ws.put_bytes(path, data)
    if out:
        write_atomic(out, data, config.storage_options)
    return SelectResult(
        round=round_,
        strategy=strategy,
        run_id=run["run_id"],
        n3=n3,
        table=table,
        path=ws.url(path),
        scored_images=scored,
        excluded={reason: reasons.get(reason, 0) for reason in EXCLUSION_REASONS},
        excluded_images=excluded_images,
        budget=budget,
        trained=trained,
        retries=objectstore.retries() - retried,
    )


@dataclass
class Summary:
    """What a user needs to judge a selection at a glance."""

    per_class: list[tuple[str, int, int, int]]  # class, images, by target map, by competitor map
    per_competitor: list[tuple[str, int, int, int, int]]  # competitor, images, target, competitor, both
    competitor_overlap: dict[tuple[str, str], int]  # images both competitors selected
    both_directions: int  # images selected through the target's map and through a competitor's


def _images_by(rows: list[dict], key: str) -> dict:
    """{key value: {direction: set of image ids}} in first-seen order."""
    groups: dict = {}
    for r in rows:
        sets = groups.setdefault(r[key], {"target": set(), "competitor": set()})
        sets[r["direction"]].add(r["image_id"])
    return groups


def summarize(table: pa.Table) -> Summary:
    """Per-class counts and overlaps between directions and between competitors."""
    rows = sorted(table.to_pylist(), key=lambda r: (r["class_id"] is None, r["class_id"] or 0))
    per_class = [
        (name or "(all background)", len(s["target"] | s["competitor"]), len(s["target"]), len(s["competitor"]))
        for name, s in _images_by(rows, "class_name").items()
    ]
    by_competitor = {c: s for c, s in sorted(_images_by(rows, "competitor").items()) if c is not None}
    per_competitor = [
        (c, len(s["target"] | s["competitor"]), len(s["target"]), len(s["competitor"]), len(s["target"] & s["competitor"]))
        for c, s in by_competitor.items()
    ]
    images = {c: s["target"] | s["competitor"] for c, s in by_competitor.items()}
    overlap = {(a, b): len(images[a] & images[b]) for a, b in itertools.combinations(images, 2)}
    directions = _images_by(rows, "strategy")
    both = sum(len(s["target"] & s["competitor"]) for s in directions.values())
    return Summary(per_class, per_competitor, overlap, both)
