"""`madmine nightly`: keep a growing corpus mined, unattended.

    ingest -> score -> select

Under a workspace lock: ingest what is new (the manifest is the watermark: a known URI is
never read again, a new one is read whatever its timestamp), score only the new images (the
run id follows the model versions, so an unchanged target continues its run; a new target
version starts a run that reads the competitors' cached maps), and refresh the round's
selection. Each step calls its step's entry point with the config's own limits and budgets,
as the command line does.

A night is a pipeline run by the same executor as a round (madmine.pipeline.executor): its
steps are committed with markers under nightly/nights/<night>/steps/ and logged in
nightly/nights/<night>.json. A night that did not finish (a crash, a failed step, a killed
driver) is resumed by the next `madmine nightly`, from its first unfinished step; a finished
night leaves its summary in nightly/history/<night>.json. Any failure raises with the reason,
and the lock is released either way.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field

from madmine import tables
from madmine.completion import history_markers, night_markers, utc_now
from madmine.config import Config
from madmine.errors import MadmineError
from madmine.lock import WorkspaceLock
from madmine.pipeline.executor import Executor, Log, Step
from madmine.steps import ingest, select
from madmine.steps.context import StepContext
from madmine.steps.score import run as scoring
from madmine.workspace import Workspace


@dataclass
class NightlySummary:
    night: str
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
    resumed: bool = False  # the night continued one that did not finish
    retries: int = 0  # object-store requests its steps retried (this process's and their workers')

    def lines(self) -> list[str]:
        out = [f"night {self.night}" + (" (resumed: it had not finished)" if self.resumed else ""),
               f"ingest: {self.ingested} new images, {self.ingest_errors} unreadable ({self.seconds.get('ingest', 0):.1f} s)",
               f"score: run {self.run_id}: {self.scored} images scored, {self.score_errors} errors in the run, "
               f"networks ran on {self.forwarded} ({self.seconds.get('score', 0):.1f} s)"]
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
    step: StepContext
    sources: tuple[str, ...]
    run_id: str = ""  # what the score step committed, for the select step


class IngestNew(Step):
    name = "ingest"

    def run(self, ctx):
        result = ingest.run(ctx.step, ingest.IngestParams.from_config(ctx.step.config, ctx.sources))
        if result.failure:  # the night stops here; the next one resumes it (what could be read is kept)
            raise MadmineError(result.failure)
        return {"added": result.added, "errors": result.error_count, "duplicates": result.duplicates,
                "retries": result.retries}


class ScoreNew(Step):
    name = "score"

    def run(self, ctx):
        scored = scoring.run(ctx.step, scoring.ScoreParams())
        return {"run_id": scored.run_id, "scored": scored.images_scored, "errors": scored.errors,
                "forwarded": scored.forwarded, "images": scored.images_total, "retries": scored.retries}


class RefreshSelection(Step):
    name = "select"

    def run(self, ctx):
        if not tables.BOUNDS.exists(ctx.step.ws):
            return {"skipped": "select: skipped, no size bounds yet: run `madmine bounds LABELS_DIR` once"}
        config = ctx.step.config
        round_ = newest_round(ctx.step.ws) if config.nightly.round < 0 else config.nightly.round
        selected = select.run(ctx.step, select.SelectParams(round_, run_id=ctx.run_id or None))
        return {"round": round_, "candidates": selected.num_images, "retries": selected.retries}


NIGHT_STEPS: tuple[Step, ...] = (IngestNew(), ScoreNew(), RefreshSelection())


def _unfinished_night(ws: Workspace) -> str | None:
    """The newest night that started and did not finish, if any."""
    finished = set(history_markers(ws).done())
    started = sorted(n[: -len(".json")] for n in ws.listdir(ws.path("nightly", "nights")) if n.endswith(".json"))
    return next((n for n in reversed(started) if n not in finished), None)


def summary_of(log: Log, executor: Executor, sources) -> NightlySummary:
    """The night's summary from what its steps committed (this run's and, when resumed, the earlier run's)."""
    summary = NightlySummary(log.record["night"], log.record["created_at"], list(sources))
    ingested, scored, selected = (executor.counts(n) or {} for n in ("ingest", "score", "select"))
    summary.ingested, summary.ingest_errors = ingested.get("added", 0), ingested.get("errors", 0)
    summary.run_id, summary.scored, summary.score_errors = scored.get("run_id", ""), scored.get("scored", 0), scored.get("errors", 0)
    summary.forwarded = scored.get("forwarded", {})
    summary.round, summary.candidates = selected.get("round"), selected.get("candidates")
    if selected.get("skipped"):
        summary.notes.append(selected["skipped"])
    summary.seconds = {name: entry.get("seconds", 0.0) for name, entry in log.steps.items()}
    return summary


def nightly(
    config: Config,
    sources: list[str] | None = None,
    *,
    ray_address: str | None = None,
    show_progress: bool = False,
    lock_settle: float = 1.0,
) -> NightlySummary:
    """One night under the workspace lock: every step not yet done, then the night's marker in nightly/history/."""
    ctx = StepContext.of(config, ray_address=ray_address, show_progress=show_progress)
    ws = ctx.ws
    sources = tuple(sources or config.nightly.sources)
    if not sources:
        raise MadmineError('nightly: no sources: pass SOURCE arguments or set [nightly] sources = ["photos/"]')
    lock = WorkspaceLock(ws, "nightly", stale_after=config.nightly.stale_after_s, settle=lock_settle)
    with lock:
        resumed = _unfinished_night(ws)
        night = resumed or f"{utc_now().replace(':', '').replace('-', '')[:15]}-{uuid.uuid4().hex[:6]}"
        log = Log(ws, ws.path("nightly", "nights", f"{night}.json"), {"night": night, "sources": list(sources)})
        log.save()
        executor = Executor(NIGHT_STEPS, night_markers(ws, night), log)
        night_ctx = NightContext(ctx, sources)

        def remember_run(name: str, text: str) -> None:
            if name == "score" and text != "running":
                night_ctx.run_id = (executor.counts("score") or {}).get("run_id", "")

        executor.run(night_ctx, tell=remember_run)
        summary = summary_of(log, executor, sources)
        summary.resumed = resumed is not None
        if lock.took_over:
            summary.took_over_lock_from = str(lock.took_over.get("owner"))
        # the steps' object-store retries (this process's and their workers'), as each step's result counts them
        summary.retries = sum((executor.counts(n) or {}).get("retries", 0) for n in executor.names)
        history_markers(ws).mark_done(night, asdict(summary))
        scored = executor.counts("score") or {}
        ws.put_json(ws.path("nightly", "watermark.json"),
                    {"last_success": utc_now(), "night": night, "run_id": summary.run_id, "images": scored.get("images", 0)})
    return summary
