"""`madmine nightly`: keep a growing corpus mined, unattended.

Under a workspace lock: ingest what is new (the manifest is the watermark: a known URI is
never read again, a new one is read whatever its timestamp), score only the new images
(the run id follows the model versions, so an unchanged target continues its run; a new
target version starts a run that reads the competitors' cached maps), refresh the round's
selection, and leave a summary in nightly/history/. Any failure raises with the reason,
and the lock is released either way.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from madmine import objectstore, tables
from madmine.completion import Markers, utc_now
from madmine.config import Config
from madmine.errors import MadmineError
from madmine.lock import WorkspaceLock
from madmine.steps.ingest import ingest
from madmine.steps.score.run import score
from madmine.steps.select import run_select
from madmine.steps.train.versions import with_latest_target
from madmine.workspace import Workspace


@dataclass
class NightlySummary:
    started_at: str
    sources: list[str]
    ingested: int = 0
    ingest_errors: int = 0
    run_id: str = ""
    scored: int = 0
    score_errors: int = 0
    forwarded: dict = field(default_factory=dict)
    round: int | None = None
    candidates: int | None = None
    notes: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    took_over_lock_from: str | None = None
    retries: int = 0  # object-store requests retried during the night, by this process and the workers

    def lines(self) -> list[str]:
        out = [
            f"ingest: {self.ingested} new images, {self.ingest_errors} unreadable ({self.seconds.get('ingest', 0):.1f} s)",
            f"score: run {self.run_id}: {self.scored} images scored, {self.score_errors} errors in the run, "
            f"networks ran on {self.forwarded} ({self.seconds.get('score', 0):.1f} s)",
        ]
        if self.candidates is not None:
            out.append(f"select: round {self.round}: {self.candidates} candidate images ({self.seconds.get('select', 0):.1f} s)")
        if self.took_over_lock_from:
            out.append(f"took over a stale lock from {self.took_over_lock_from}")
        if self.retries:
            out.append(f"object store: {self.retries} requests retried")
        return out + self.notes


def newest_round(workspace: Workspace) -> int:
    return max(tables.CANDIDATES.rounds(workspace), default=0)


@dataclass
class NightContext:
    """What each step of one night reads and fills in."""

    config: Config
    ws: Workspace
    sources: list[str]
    summary: NightlySummary
    ray_address: str | None = None
    show_progress: bool = False
    images_total: int = 0
    retries: dict = field(default_factory=dict)  # step -> retries its result reports (workers' included)


class NightStep:
    """A step of the nightly run. Each is incremental (the manifest is the watermark, committed
    shards are skipped), so a step is never done in advance: run again, it does only what is new."""

    name = ""

    def is_done(self, ctx: NightContext) -> bool:
        return False

    def run(self, ctx: NightContext) -> None:
        raise NotImplementedError


class IngestNew(NightStep):
    name = "ingest"

    def run(self, ctx):
        result = ingest(
            ctx.ws,
            ctx.sources,
            storage_options=ctx.config.storage_options,
            max_pixels=ctx.config.scoring.max_pixels,
            min_side=ctx.config.scoring.min_side,
            max_bytes=ctx.config.scoring.max_bytes,
            decode_timeout_s=ctx.config.scoring.decode_timeout_s,
            show_progress=ctx.show_progress,
            ray_address=ctx.ray_address,
            actors=ctx.config.scoring.actors,
        )
        ctx.summary.ingested, ctx.summary.ingest_errors = result.added, result.error_count
        ctx.retries["ingest"] = result.retries


class ScoreNew(NightStep):
    name = "score"

    def run(self, ctx):
        scored = score(with_latest_target(ctx.config, ctx.ws), ray_address=ctx.ray_address, show_progress=ctx.show_progress)
        ctx.summary.run_id, ctx.summary.scored, ctx.summary.score_errors = scored.run_id, scored.images_scored, scored.errors
        ctx.summary.forwarded = scored.forwarded
        ctx.retries["score"] = scored.retries
        ctx.images_total = scored.images_total


class RefreshSelection(NightStep):
    name = "select"

    def run(self, ctx):
        if not tables.BOUNDS.exists(ctx.ws):
            ctx.summary.notes.append("select: skipped, no size bounds yet: run `madmine bounds LABELS_DIR` once")
            return
        round_ = newest_round(ctx.ws) if ctx.config.nightly.round < 0 else ctx.config.nightly.round
        selected = run_select(ctx.config, round_, run_id=ctx.summary.run_id)
        ctx.summary.round, ctx.summary.candidates = round_, selected.num_images
        ctx.retries["select"] = selected.retries


NIGHT_STEPS: tuple[NightStep, ...] = (IngestNew(), ScoreNew(), RefreshSelection())


def nightly(
    config: Config,
    sources: list[str] | None = None,
    *,
    ray_address: str | None = None,
    show_progress: bool = False,
    lock_settle: float = 1.0,
) -> NightlySummary:
    """One night under the workspace lock: every step, then the night's marker in nightly/history/."""
    workspace = Workspace.from_config(config)
    sources = list(sources or config.nightly.sources)
    if not sources:
        raise MadmineError('nightly: no sources: pass SOURCE arguments or set [nightly] sources = ["photos/"]')
    summary = NightlySummary(started_at=utc_now(), sources=sources)
    ctx = NightContext(config, workspace, sources, summary, ray_address, show_progress)
    lock = WorkspaceLock(workspace, "nightly", stale_after=config.nightly.stale_after_s, settle=lock_settle)
    night_retries, in_steps = objectstore.retries(), 0
    with lock:
        if lock.took_over:
            summary.took_over_lock_from = str(lock.took_over.get("owner"))
        for step in NIGHT_STEPS:
            if step.is_done(ctx):
                continue
            t, retried = time.perf_counter(), objectstore.retries()
            step.run(ctx)
            summary.seconds[step.name] = time.perf_counter() - t
            in_steps += objectstore.retries() - retried
        # this process's retries outside the steps, plus each step's own count (its workers' included)
        summary.retries = objectstore.retries() - night_retries - in_steps + sum(ctx.retries.values())
        stamp = summary.started_at.replace(":", "").replace("-", "")[:15]
        Markers(workspace, "nightly/history").mark_done(stamp, asdict(summary))
        workspace.put_json(
            workspace.path("nightly", "watermark.json"),
            {"last_success": summary.started_at, "run_id": summary.run_id, "images": ctx.images_total},
        )
    return summary
