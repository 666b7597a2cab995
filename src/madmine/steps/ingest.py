"""Ingest: files, folders, globs, s3:// prefixes or URI lists -> the `manifest` table.

image_id is a hash of the bytes, so exact duplicates collapse wherever they come from, and
re-running an ingest adds only what is new. Every unreadable source becomes a row of the
`errors` table; none stops the ingest. Bytes are read and decoded through the untrusted-bytes
boundary (madmine.untrusted): only regular files up to max_bytes, decoded within
decode_timeout_s, any failure that file's error row.

The driver never holds the corpus (steps/ingest_shards/):

    driver:  list the sources page by page into a listing file -> DuckDB joins it with the
             manifest's URIs (and earlier errors): the new URIs, written to a todo file in shards
    worker:  per shard: read, hash (sha256), probe and phash each file on a few guarded threads
             -> write the shard's manifest rows (staged) and error rows, then its marker
    driver:  one summary per shard -> one DuckDB query settles duplicates across shards and
             against the manifest -> the staged parts become manifest parts

Shards run where scoring's do (madmine.placement): on one machine in this process, or in a
process a core when there are several shards of local files; in Ray Data actors on a cluster.
A worker lost mid-shard costs that shard's time: Ray Data retries it and its files are
idempotent (on one machine, a dead shard process stops the ingest with nothing promoted, and
a re-run reads its shards again). A driver killed before the promotion loses the shards in
flight and nothing else: the next ingest finds those URIs new again.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from madmine import objectstore, tables
from madmine.errors import MadmineError
from madmine.placement import resolve_executor
from madmine.steps.context import StepContext, from_section
from madmine.steps.ingest_shards.area import IngestArea
from madmine.steps.ingest_shards.executors import run_local
from madmine.steps.ingest_shards.listing import SOURCE_ERRORS, write_listing
from madmine.steps.ingest_shards.plan import plan
from madmine.steps.ingest_shards.promote import promote
from madmine.steps.ingest_shards.worker import IngestContext, image_id_of  # noqa: F401  (imported from here)
from madmine.steps.score.shards import ShardSpec
from madmine.untrusted import Limits
from madmine.workspace import Workspace, split_uri

DEFAULT_SHARD_SIZE = 1024  # files per ingest shard: one todo row group, one staged manifest part
ERRORS_KEPT = 1000  # error rows an IngestResult holds (the errors table, run_id 'ingest', holds them all)


@dataclass
class IngestResult:
    added: int
    duplicates: int
    already_known: int
    errors: list[dict]  # the source errors and the first ERRORS_KEPT file errors
    skipped_non_images: int
    part: str | None  # the first manifest part written (see `parts`)
    failed_before: int = 0
    tried: int = 0  # files read in this ingest (new URIs)
    parts: list[str] = field(default_factory=list)
    error_count: int = 0  # every error row of this ingest, sources included
    listed: int = 0  # URIs the sources named (a URI named twice counts twice)
    shards: int = 0
    retries: int = 0  # object-store requests retried, by the driver and every shard
    executor: str = "local"
    seconds: dict = field(default_factory=dict)  # listing and plan, shards, promotion; shard phases summed
    max_error_fraction: float = 1.0  # the error budget this ingest was run with

    @property
    def missing_sources(self) -> list[dict]:
        """Errors of SOURCE arguments themselves (not found, unreadable), as opposed to files in them."""
        return [e for e in self.errors if e["error"] in SOURCE_ERRORS]

    @property
    def file_errors(self) -> list[dict]:
        return [e for e in self.errors if e["error"] not in SOURCE_ERRORS]

    @property
    def failure(self) -> str | None:
        """Why this ingest must exit non-zero (a source missing, the error budget exceeded), or None."""
        max_error_fraction = self.max_error_fraction
        problems = []
        if self.missing_sources:
            shown = ", ".join(e["uri"] for e in self.missing_sources[:3])
            problems.append(f"{len(self.missing_sources)} source(s) not found or unreadable ({shown})")
        failed = max(self.error_count, len(self.errors)) - len(self.missing_sources)
        if self.tried and failed / self.tried > max_error_fraction:
            problems.append(
                f"{failed} of {self.tried} files failed ({failed / self.tried:.1%}), above max_error_fraction="
                f"{max_error_fraction:.1%}"
            )
        if not problems:
            return None
        return "ingest: " + "; ".join(problems) + "; what could be read was added (errors table, run_id = 'ingest')"


def default_threads(sources: list[str], cores: int) -> int:
    """Threads per shard worker. Decoding local files is CPU work, and threads of one process
    contend for the GIL (two read small JPEGs slower than one): one, with a process a core
    (default_processes). Reading from an object store waits on each request: four threads a core."""
    return 4 * cores if _remote(sources) else 1


def default_processes(sources: list[str], cores: int) -> int:
    """Processes that run local shards at once: one a core for local files; one for an object
    store, whose threads mostly wait."""
    return 1 if _remote(sources) else cores


def _remote(sources: list[str]) -> bool:
    return any(split_uri(s)[0] not in ("file", "local") for s in sources)


def _run_ray(specs: list[ShardSpec], ctx: IngestContext, ray_address: str | None, actors: int) -> Iterator[dict]:
    """Ray Data runs the shards; imported here because importing Ray Data takes half a second
    that an ingest on one machine should not pay."""
    from madmine.steps.ingest_shards.ray_data import run_ray

    return run_ray(specs, ctx, ray_address, actors)


@dataclass(frozen=True)
class IngestParams:
    """One ingest: what to read, with which limits and error budget ([scoring]), and where its shards run."""

    sources: tuple[str, ...]
    workers: int | None = None  # threads that read and decode in each shard worker (default_threads)
    retry_errors: bool = False  # read again the files that failed an earlier ingest
    max_error_fraction: float = 0.05
    executor: str = "auto"  # auto | ray | local (madmine.placement)
    shard_size: int = DEFAULT_SHARD_SIZE

    @classmethod
    def from_config(cls, config, sources, **overrides) -> IngestParams:
        return from_section(cls, config.scoring, sources=tuple(sources), **overrides)


def run(ctx: StepContext, params: IngestParams) -> IngestResult:
    """The ingest step: new images of `params.sources` into the manifest; `result.failure` says why a
    caller must fail (a source missing, more files failed than the error budget allows)."""
    if params.workers is not None and params.workers < 1:
        raise MadmineError(f"--workers must be at least 1, got {params.workers}")
    if not 0 <= params.max_error_fraction <= 1:
        raise MadmineError(f"--max-error-fraction must be within [0, 1], got {params.max_error_fraction}")
    result = ingest(ctx.ws, list(params.sources), storage_options=ctx.config.storage_options,
                    limits=Limits.of(ctx.config.scoring), workers=params.workers, show_progress=ctx.show_progress,
                    retry_errors=params.retry_errors, executor=params.executor, ray_address=ctx.ray_address,
                    actors=ctx.config.scoring.actors, shard_size=params.shard_size)
    result.max_error_fraction = params.max_error_fraction
    return result


def ingest(
    workspace: Workspace,
    sources: list[str],
    *,
    storage_options: dict | None = None,
    limits: Limits = Limits(),
    workers: int | None = None,
    show_progress: bool = True,
    retry_errors: bool = False,
    executor: str = "auto",
    ray_address: str | None = None,
    actors: int = 1,
    shard_size: int = DEFAULT_SHARD_SIZE,
    processes: int | None = None,
) -> IngestResult:
    """Add the new images of `sources` to the manifest, one immutable part per shard.

    URIs that failed an earlier ingest are skipped unless `retry_errors` (a nightly run
    would otherwise record the same broken files every night). `workers` is the threads that
    read and decode in each shard worker (default: default_threads); `processes` the shards
    run at once on this machine (default: default_processes); `actors` the shard workers on Ray.
    """
    if workers is not None and workers < 1:
        raise MadmineError(f"ingest needs at least 1 worker, got {workers}")
    if shard_size < 1:
        raise MadmineError(f"ingest shard_size must be at least 1, got {shard_size}")
    retried = objectstore.retries()
    executor = resolve_executor(executor, ray_address, actors)
    cores = 1 if executor == "ray" else os.cpu_count() or 1  # a Ray actor has one CPU; this machine, all
    if workers is None:
        workers = default_threads(sources, cores)
    storage_options = storage_options or {}
    stamp = dt.datetime.now(dt.timezone.utc)
    area = IngestArea(workspace, f"{stamp.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}")
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="madmine-ingest-") as scratch:
        t = time.perf_counter()
        listing = write_listing(sources, storage_options, f"{scratch}/listing.parquet")
        todo = plan(area, f"{scratch}/listing.parquet", listing.uris, retry_errors=retry_errors, shard_size=shard_size,
                    scratch=scratch)
        seconds["list and plan"] = time.perf_counter() - t
        if listing.errors:
            tables.ERRORS.write(workspace, pa.Table.from_pylist(listing.errors, schema=tables.ERRORS.schema),
                                run_id="ingest", shard=area.errors_key("sources"))
        ctx = IngestContext(area.ingest_id, workspace.url(workspace.root), dict(workspace.storage_options),
                            dict(storage_options), stamp.isoformat(),
                            limits.max_pixels, limits.min_side, limits.max_bytes, limits.decode_timeout_s, workers)
        rows: dict[str, int] = {}
        errors, error_count, duplicates, shard_retries = list(listing.errors), len(listing.errors), 0, 0
        t = time.perf_counter()
        with Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      disable=not show_progress) as progress:
            task = progress.add_task("ingest", total=todo.new)
            if not todo.shards:  # nothing new: no executor to start (Ray Data refuses an empty dataset)
                summaries = []
            elif executor == "local":
                summaries = run_local(todo.shards, ctx, processes or default_processes(sources, cores))
            else:
                summaries = _run_ray(todo.shards, ctx, ray_address, actors)
            here = (socket.gethostname(), os.getpid())
            for summary in summaries:
                if summary["shard"] in rows:
                    continue  # a retried shard: it counts once
                rows[summary["shard"]] = summary["rows"]
                duplicates += summary["duplicates"]
                error_count += summary["errors"]
                if (summary.get("node"), summary.get("pid")) != here:  # this process counted its own shards' retries
                    shard_retries += summary.get("retries", 0)
                errors.extend(summary["error_rows"][: max(0, ERRORS_KEPT - len(errors))])
                for phase, value in summary.get("timings", {}).items():
                    seconds[phase] = seconds.get(phase, 0.0) + value
                progress.advance(task, summary["listed"])
        seconds["shards"] = time.perf_counter() - t
        done = set(area.markers.done())
        missing = [s.shard for s in todo.shards if s.shard not in done]
        if missing:
            raise MadmineError(
                f"ingest: {len(missing)} of {len(todo.shards)} shards did not complete ({missing[:3]}...); "
                "nothing of them entered the manifest: re-run the same `madmine ingest` to read them"
            )
        t = time.perf_counter()
        promoted = promote(area, rows, scratch)
        seconds["promote"] = time.perf_counter() - t
    workspace.remove(area.folder, recursive=True)
    return IngestResult(
        added=promoted.added,
        duplicates=duplicates + promoted.duplicates,
        already_known=todo.known,
        failed_before=todo.failed_before,
        errors=errors,
        skipped_non_images=listing.skipped,
        part=promoted.parts[0] if promoted.parts else None,
        tried=todo.new,
        parts=promoted.parts,
        error_count=error_count,
        listed=listing.uris,
        shards=len(todo.shards),
        retries=objectstore.retries() - retried + shard_retries,
        executor=executor,
        seconds=seconds,
    )
