"""`madmine nightly`: keep a growing corpus mined, unattended.

Under a workspace lock: ingest what is new (the manifest is the watermark: a known URI is
never read again, a new one is read whatever its timestamp), score only the new images
(the run id follows the model versions, so an unchanged target continues its run; a new
target version starts a run that reads the competitors' cached maps), refresh the round's
selection, and leave a summary in nightly/history/. Any failure raises with the reason,
and the lock is released either way.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, field

from madmine.config import Config
from madmine.steps.ingest import ingest
from madmine.errors import MadmineError
from madmine.lock import WorkspaceLock
from madmine.steps.score import score
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
        return out + self.notes


def newest_round(workspace: Workspace) -> int:
    rounds = []
    for name in workspace.listdir(workspace.path("tables", "candidates")):
        head = name.removeprefix("round-").split("-", 1)[0]
        if name.startswith("round-") and head.isdigit():
            rounds.append(int(head))
    return max(rounds, default=0)


def nightly(
    config: Config,
    sources: list[str] | None = None,
    *,
    ray_address: str | None = None,
    show_progress: bool = False,
    lock_settle: float = 1.0,
) -> NightlySummary:
    workspace = Workspace.from_config(config)
    sources = list(sources or config.nightly.sources)
    if not sources:
        raise MadmineError('nightly: no sources: pass SOURCE arguments or set [nightly] sources = ["photos/"]')
    summary = NightlySummary(started_at=dt.datetime.now(dt.timezone.utc).isoformat(), sources=sources)
    lock = WorkspaceLock(workspace, "nightly", stale_after=config.nightly.stale_after_s, settle=lock_settle)
    with lock:
        if lock.took_over:
            summary.took_over_lock_from = str(lock.took_over.get("owner"))
        t = time.perf_counter()
        ingested = ingest(
            workspace,
            sources,
            storage_options=config.storage_options,
            max_pixels=config.scoring.max_pixels,
            min_side=config.scoring.min_side,
            show_progress=show_progress,
        )
        summary.ingested, summary.ingest_errors = ingested.added, len(ingested.errors)
        summary.seconds["ingest"] = time.perf_counter() - t

        t = time.perf_counter()
        scored = score(with_latest_target(config, workspace), ray_address=ray_address, show_progress=show_progress)
        summary.run_id, summary.scored, summary.score_errors = scored.run_id, scored.images_scored, scored.errors
        summary.forwarded = scored.forwarded
        summary.seconds["score"] = time.perf_counter() - t

        t = time.perf_counter()
        if not workspace.table_files("bounds"):
            summary.notes.append("select: skipped, no size bounds yet: run `madmine bounds LABELS_DIR` once")
        else:
            from madmine.steps.select import run_select

            round_ = newest_round(workspace) if config.nightly.round < 0 else config.nightly.round
            selected = run_select(config, round_, run_id=scored.run_id)
            summary.round, summary.candidates = round_, selected.num_images
        summary.seconds["select"] = time.perf_counter() - t

        stamp = summary.started_at.replace(":", "").replace("-", "")[:15]
        workspace.put_json(workspace.path("nightly", "history", f"{stamp}.json"), asdict(summary))
        workspace.put_json(
            workspace.path("nightly", "watermark.json"),
            {"last_success": summary.started_at, "run_id": summary.run_id, "images": scored.images_total},
        )
    return summary
