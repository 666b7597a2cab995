"""`madmine score`: the manifest, in shards, through the scoring stages into Parquet.

A run is identified by its models' versions, so re-running the same command after an
ingest scores only the new images, and a finished run re-run does nothing. Each shard's
predictions, pairs and errors are written whole, then its completion marker: a killed
driver loses at most the shards in flight, and the next run skips every committed one.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from madmine import tables
from madmine.completion import shard_markers, utc_now
from madmine.config import Config
from madmine.errors import MadmineError
from madmine.models import check_models
from madmine.steps.score.context import ScoreContext, column
from madmine.steps.score.executors.local import run_local
from madmine.steps.score.executors.ray_data import run_ray
from madmine.steps.score.runs import read_record, run_records, write_record
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

    @property
    def error_fraction(self) -> float:
        return self.errors / self.images_total if self.images_total else 0.0


def default_run_id(config: Config, versions: dict[str, str]) -> str:
    """Same models and classes -> same run, so re-running continues instead of starting over."""
    payload = {
        "classes": list(config.classes),
        "models": [(m.name, m.role, versions[m.name], m.input_size, m.mean, m.std) for m in config.models],
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    return f"score-{config.target.name}-{digest}"


def plan_shards(workspace: Workspace, shard_size: int) -> dict[str, pa.Table]:
    """Shard id -> rows (image_id, uri). Stable as the corpus grows: manifest parts are immutable."""
    shards: dict[str, pa.Table] = {}
    for path in tables.MANIFEST.files(workspace):
        part = posixpath.basename(path)[: -len(".parquet")]
        table = workspace.read_parquet([path]).select(["image_id", "uri"]).sort_by("image_id")
        for k, start in enumerate(range(0, table.num_rows, shard_size)):
            shards[f"{part}-{k:05d}"] = table.slice(start, shard_size)
    return shards


def _nan_to_none(x: float):
    return None if np.isnan(x) else float(x)


def _shard_tables(ctx: ScoreContext, rows: list[dict]) -> tuple[pa.Table, pa.Table, pa.Table]:
    """One shard's per-image results -> (predictions, pairs, errors), sorted for reproducibility."""
    rows = sorted(rows, key=lambda r: r["image_id"])
    preds, pairs, errors = [], [], []
    target = ctx.target
    for r in rows:
        if r["error"]:
            errors.append(
                {
                    "run_id": ctx.run_id,
                    "uri": r["uri"],
                    "image_id": r["image_id"],
                    "stage": r["stage"],
                    "error": r["error"],
                    "detail": r["detail"],
                }
            )
            continue
        for spec in ctx.models:
            preds.append(
                {
                    "run_id": ctx.run_id,
                    "image_id": r["image_id"],
                    "model": spec.name,
                    "model_version": ctx.versions[spec.name],
                    "role": spec.role,
                    "height": int(r[column("h", spec.name)]),
                    "width": int(r[column("w", spec.name)]),
                    "class_pixels": r[column("cp", spec.name)].tolist(),
                    "mean_entropy": _nan_to_none(r[column("ent", spec.name)]),
                    "mean_msp": _nan_to_none(r[column("msp", spec.name)]),
                }
            )
        for spec in ctx.competitors:
            pairs.append(
                {
                    "run_id": ctx.run_id,
                    "image_id": r["image_id"],
                    "target_version": ctx.versions[target.name],
                    "competitor": spec.name,
                    "competitor_version": ctx.versions[spec.name],
                    "intersection": r[column("I", spec.name)].tolist(),
                    "union": r[column("U", spec.name)].tolist(),
                    "d": _nan_to_none(r[column("d", spec.name)]),
                }
            )
    return (
        pa.Table.from_pylist(preds, schema=tables.PREDICTIONS.schema),
        pa.Table.from_pylist(pairs, schema=tables.PAIRS.schema),
        pa.Table.from_pylist(errors, schema=tables.ERRORS.schema),
    )


def commit_shard(workspace: Workspace, ctx: ScoreContext, shard: str, rows: list[dict], seconds: float) -> dict:
    """Write the shard's three tables, then its marker (the commit). Returns the marker."""
    predictions, pairs, errors = _shard_tables(ctx, rows)
    forwarded = {m.name: int(sum(bool(r[column("fw", m.name)]) for r in rows if not r["error"])) for m in ctx.models}
    for name, table in (("errors", errors), ("pairs", pairs), ("predictions", predictions)):
        tables.table(name).write(workspace, table, run_id=ctx.run_id, shard=shard)
    marker = {
        "shard": shard,
        "images": len(rows),
        "errors": errors.num_rows,
        "forwarded": forwarded,
        "seconds": seconds,
    }
    return shard_markers(workspace, ctx.run_id).mark_done(shard, marker)


def _unpack(batch: dict[str, np.ndarray]) -> list[dict]:
    n = len(batch["image_id"])
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def score(
    config: Config,
    *,
    run_id: str | None = None,
    resume: bool = False,
    executor: str = "ray",
    ray_address: str | None = None,
    max_error_fraction: float | None = None,
    show_progress: bool = True,
) -> ScoreResult:
    """Score every uncommitted shard of the manifest; raise MadmineError above the error budget."""
    started = time.perf_counter()
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
    ctx = ScoreContext(
        run_id=run_id,
        classes=config.classes,
        models=ordered,
        versions=versions,
        workspace_uri=config.workspace_uri,
        storage_options=dict(config.storage_options),
        scoring=config.scoring,
    )

    shards = plan_shards(workspace, shard_size)
    if not shards:
        raise MadmineError("the manifest is empty: run `madmine ingest SOURCE...` first")
    committed = set(shard_markers(workspace, run_id).done())
    pending = {s: rows for s, rows in shards.items() if s not in committed}
    images_total = sum(t.num_rows for t in shards.values())
    record = record or {
        "run_id": run_id,
        "created_at": utc_now(),
        "shard_size": shard_size,
        "classes": list(config.classes),
        "config_fingerprint": config.fingerprint(),
        "models": [{"name": m.name, "role": m.role, "version": versions[m.name], "kind": m.kind} for m in ordered],
    }

    errors_before = sum(_marker_errors(workspace, run_id, s) for s in committed if s in shards)
    new_errors = 0
    images_scored = 0
    forwarded = {m.name: 0 for m in ordered}
    if pending:
        record.update(status="running", updated_at=utc_now())
        write_record(workspace, record)
        rows = pa.concat_tables(
            [t.append_column("shard", pa.array([s] * t.num_rows, pa.string())) for s, t in pending.items()]
        )
        expected = {s: t.num_rows for s, t in pending.items()}
        if executor == "local":
            batches = run_local(rows, ctx)
        elif executor == "ray":
            batches = run_ray(rows, ctx, ray_address)
        else:
            raise MadmineError(f"unknown executor {executor!r}: use 'ray' or 'local'")
        received: dict[str, dict[str, dict]] = defaultdict(dict)
        shard_started: dict[str, float] = {}
        with Progress(
            TextColumn("score [bold]{task.fields[shards]}[/] shards"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not show_progress,
        ) as progress:
            task = progress.add_task("score", total=rows.num_rows, shards=f"0/{len(pending)}")
            done = 0
            for batch in batches:
                for row in _unpack(batch):
                    shard = str(row["shard"])
                    shard_started.setdefault(shard, time.perf_counter())
                    if row["image_id"] in received[shard]:
                        continue  # a retried batch: each image counts once
                    received[shard][row["image_id"]] = row
                    images_scored += 1
                    progress.advance(task)
                    if len(received[shard]) == expected[shard]:
                        seconds = time.perf_counter() - shard_started[shard]
                        marker = commit_shard(workspace, ctx, shard, list(received.pop(shard).values()), seconds)
                        new_errors += marker["errors"]
                        for name, count in marker["forwarded"].items():
                            forwarded[name] += count
                        done += 1
                        progress.update(task, shards=f"{done}/{len(pending)}")
        missing = [s for s in pending if s not in set(shard_markers(workspace, run_id).done())]
        if missing:
            raise MadmineError(
                f"run {run_id}: {len(missing)} shards did not complete ({missing[:3]}...); re-run `madmine score` to finish them"
            )
    result = ScoreResult(
        run_id=run_id,
        shards_total=len(shards),
        shards_skipped=len(shards) - len(pending),
        shards_scored=len(pending),
        images_scored=images_scored,
        errors=errors_before + new_errors,
        images_total=images_total,
        seconds=time.perf_counter() - started,
        forwarded=forwarded,
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


def _marker_errors(workspace: Workspace, run_id: str, shard: str) -> int:
    return int(shard_markers(workspace, run_id).get(shard).get("errors", 0))
