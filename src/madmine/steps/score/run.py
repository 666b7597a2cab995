"""`madmine score`: the driver. It plans shards, hands them to workers, and counts.

A run is identified by its models' versions, so re-running the same command after an
ingest scores only the new images, and a finished run re-run does nothing. The driver plans
shards from the manifest parts' footers, lists the committed markers and the map packs the
store holds (a few listings), and hands each pending shard to a worker (`shard_job`), which
reads, scores and commits it; the driver receives one summary per shard. Its memory does not
grow with the corpus, and a killed driver loses at most the shards in flight: the next run
skips every committed one.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from madmine import objectstore, tables
from madmine.completion import shard_markers, utc_now
from madmine.config import Config
from madmine.errors import MadmineError
from madmine.models.registry import check_models
from madmine.models.resolve import resolve
from madmine.placement import resolve_executor
from madmine.steps.context import StepContext
from madmine.steps.score.context import ScoreContext
from madmine.steps.score.executors.local import run_local
from madmine.steps.score.map_store import MapStore
from madmine.steps.score.runs import read_record, run_records, write_record
from madmine.steps.score.shards import plan_shards
from madmine.steps.train.versions import with_latest_target
from madmine.workspace import Workspace


@dataclass
class ScoreResult:
    run_id: str
    shards_total: int
    shards_skipped: int
    shards_scored: int
    images_scored: int
    errors: int
    images_total: int
    seconds: float
    forwarded: dict = field(default_factory=dict)  # model -> images it ran on (the rest came from the cache)
    retries: int = 0  # object-store requests retried, by the driver and every shard

    @property
    def error_fraction(self) -> float:
        return self.errors / self.images_total if self.images_total else 0.0


def _run_ray(pending, ctx, ray_address, advance):
    """Ray Data scores the shards; imported here because importing Ray Data takes half a second
    that a run on the local executor (every one-machine run) should not pay."""
    from madmine.steps.score.executors.ray_data import run_ray

    return run_ray(pending, ctx, ray_address, advance)


def default_run_id(config: Config, versions: dict[str, str]) -> str:
    """Same models and classes -> same run, so re-running continues instead of starting over."""
    payload = {
        "classes": list(config.classes),
        "models": [(m.name, m.role, versions[m.name], m.input_size, m.mean, m.std) for m in config.models],
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    return f"score-{config.target.name}-{digest}"


def run_errors(ws: Workspace, run_id: str) -> int:
    """Images that failed in a run: the rows of its committed error files (only shards with
    errors have one; their footers hold the counts)."""
    total = 0
    for path in tables.ERRORS.files(ws, run_id=run_id):
        with ws.fs.open(path, "rb") as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


@dataclass(frozen=True)
class ScoreParams:
    """One scoring run: which run, where it runs, its error budget, and whose target it scores."""

    run_id: str | None = None  # default: derived from the model versions
    resume: bool = False  # continue the newest unfinished run
    executor: str = "auto"  # auto | ray | local (resolve_executor)
    max_error_fraction: float | None = None  # default: [scoring] max_error_fraction
    selection: str = tables.MAD  # whose newest fine-tuned target: MAD's chain or a baseline's
    before_round: int | None = None  # only versions fine-tuned before this round (a round scores with its own)


def run(ctx: StepContext, params: ScoreParams) -> ScoreResult:
    """The scoring step: the newest target version of `params.selection`'s chain and every competitor over
    every uncommitted shard of the manifest."""
    config = with_latest_target(ctx.config, ctx.ws, before_round=params.before_round, selection=params.selection)
    return score(config, run_id=params.run_id, resume=params.resume, executor=params.executor,
                 ray_address=ctx.ray_address, max_error_fraction=params.max_error_fraction,
                 show_progress=ctx.show_progress)


def score(
    config: Config,
    *,
    run_id: str | None = None,
    resume: bool = False,
    executor: str = "auto",
    ray_address: str | None = None,
    max_error_fraction: float | None = None,
    show_progress: bool = True,
) -> ScoreResult:
    """Score every uncommitted shard of the manifest; raise MadmineError above the error budget."""
    started, retried = time.perf_counter(), objectstore.retries()
    config = resolve(config)
    executor = resolve_executor(executor, ray_address, config.scoring.actors)
    workspace = Workspace.from_config(config)
    versions = check_models(config)
    if resume and run_id is None:
        unfinished = [r for r in run_records(workspace) if r.get("status") != "complete"]
        if not unfinished:
            raise MadmineError("--resume: no unfinished scoring run in the workspace; run `madmine score` to start one")
        run_id = unfinished[-1]["run_id"]
    run_id = run_id or default_run_id(config, versions)
    record = read_record(workspace, run_id)
    if record and record.get("config_fingerprint") not in (None, config.fingerprint()):
        raise MadmineError(
            f"run {run_id!r} was started with other models or classes; pass another --run-id, or restore the config"
        )
    shard_size = record["shard_size"] if record else config.scoring.shard_size
    ordered = (config.target, *config.competitors)

    shards = plan_shards(workspace, shard_size)
    if not shards:
        raise MadmineError("the manifest is empty: run `madmine ingest SOURCE...` first")
    markers = shard_markers(workspace, run_id)
    committed = set(markers.done())
    pending = [s for s in shards if s.shard not in committed]
    images_total = sum(s.size for s in shards)
    store = MapStore(workspace)
    ctx = ScoreContext(
        run_id=run_id,
        classes=config.classes,
        models=ordered,
        versions=versions,
        workspace_uri=config.workspace_uri,
        storage_options=dict(config.storage_options),
        scoring=config.scoring,
        stored_packs={m.name: frozenset(store.packs(m.name, versions[m.name])) for m in ordered if m.is_network}
        if pending and config.scoring.cache_maps else {},
    )
    record = record or {
        "run_id": run_id,
        "created_at": utc_now(),
        "shard_size": shard_size,
        "classes": list(config.classes),
        "config_fingerprint": config.fingerprint(),
        "models": [{"name": m.name, "role": m.role, "version": versions[m.name], "kind": m.kind} for m in ordered],
    }

    images_scored, shard_retries = 0, 0
    forwarded = {m.name: 0 for m in ordered}
    if pending:
        record.update(status="running", updated_at=utc_now())
        write_record(workspace, record)
        with Progress(
            TextColumn("score [bold]{task.fields[shards]}[/] shards"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not show_progress,
        ) as progress:
            task = progress.add_task("score", total=sum(s.size for s in pending), shards=f"0/{len(pending)}")
            advance = lambda n: progress.advance(task, n)  # noqa: E731  (images decoded and scored, as they go)
            summaries = run_local(pending, ctx, advance) if executor == "local" else _run_ray(pending, ctx, ray_address, advance)
            done: set[str] = set()
            for summary in summaries:
                if summary["shard"] in done:
                    continue  # a retried shard: it counts once
                done.add(summary["shard"])
                images_scored += summary["images"]
                shard_retries += summary.get("retries", 0)
                for name, count in summary["forwarded"].items():
                    forwarded[name] += count
                progress.update(task, shards=f"{len(done)}/{len(pending)}")
        missing = [s.shard for s in pending if s.shard not in set(markers.done())]
        if missing:
            raise MadmineError(
                f"run {run_id}: {len(missing)} shards did not complete ({missing[:3]}...); re-run `madmine score` to finish them"
            )
    errors = run_errors(workspace, run_id)
    result = ScoreResult(
        run_id=run_id,
        shards_total=len(shards),
        shards_skipped=len(shards) - len(pending),
        shards_scored=len(pending),
        images_scored=images_scored,
        errors=errors,
        images_total=images_total,
        seconds=time.perf_counter() - started,
        forwarded=forwarded,
        # shards scored in this process counted their retries in this process's count too
        retries=objectstore.retries() - retried + (shard_retries if executor == "ray" else 0),
    )
    record.update(
        status="complete",
        updated_at=utc_now(),
        images=images_total,
        errors=result.errors,
        shards=len(shards),
    )
    write_record(workspace, record)
    limit = config.scoring.max_error_fraction if max_error_fraction is None else max_error_fraction
    if result.error_fraction > limit:
        raise MadmineError(
            f"run {run_id}: {result.errors} of {images_total} images failed ({result.error_fraction:.1%}), "
            f"above max_error_fraction={limit:.1%}. Every result is saved; see them with "
            f"`madmine sql \"select error, count(*) from errors where run_id = '{run_id}' group by 1\"`"
        )
    return result
