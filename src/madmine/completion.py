"""The one completion mechanism: a small JSON marker, written last, says a unit of work is done.

Scoring shards, round steps, fine-tuning rounds and nightly runs all commit this way: the
work's own files are written first (each atomically), then the marker. A crash before the
marker leaves work that readers ignore and the next run redoes; a marker never points at
half-written output. Markers live in one folder per kind of work, one file per unit.
"""

from __future__ import annotations

import datetime as dt
import posixpath

from madmine.workspace import Workspace

SUFFIX = ".json"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


class Markers:
    """Completion markers under one workspace folder: `<folder>/<name>.json`."""

    def __init__(self, ws: Workspace, folder: str):
        self.ws = ws
        self.folder = folder

    def path(self, name: str) -> str:
        return self.ws.path(self.folder, f"{name}{SUFFIX}")

    def get(self, name: str) -> dict | None:
        """The marker's record, or None while the unit is not done."""
        try:
            return self.ws.get_json(self.path(name))
        except FileNotFoundError:
            return None

    def is_done(self, name: str) -> bool:
        return self.ws.exists(self.path(name))

    def mark_done(self, name: str, record: dict | None = None) -> dict:
        """Commit a unit: call only after everything it wrote is in place."""
        record = {**(record or {}), "committed_at": utc_now()}
        self.ws.put_json(self.path(name), record)
        return record

    def clear(self, name: str) -> None:
        self.ws.remove(self.path(name))

    def done(self) -> list[str]:
        """Names of the committed units (temporaries of an atomic write are not markers)."""
        names = self.ws.listdir(self.ws.path(self.folder))
        return [n[: -len(SUFFIX)] for n in names if n.endswith(SUFFIX) and not n.startswith(".tmp-")]


# ---- every kind of work's marker folder, in one place ------------------------------------------
def shard_markers(ws: Workspace, run_id: str) -> Markers:
    """A scoring run's shards: runs/<run_id>/shards/<shard>.json (sql/views.sql reads these too)."""
    return Markers(ws, posixpath.join("runs", run_id, "shards"))


def round_markers(ws: Workspace, round_: int) -> Markers:
    """A round's steps: rounds/round-<R>/steps/<step>.json."""
    return Markers(ws, posixpath.join("rounds", f"round-{round_}", "steps"))


def night_markers(ws: Workspace, night: str) -> Markers:
    """One night's steps: nightly/nights/<night>/steps/<step>.json."""
    return Markers(ws, posixpath.join("nightly", "nights", night, "steps"))


def history_markers(ws: Workspace) -> Markers:
    """Finished nights: nightly/history/<night>.json, each holding its summary."""
    return Markers(ws, posixpath.join("nightly", "history"))


def finetune_markers(ws: Workspace, folder: str) -> Markers:
    """A fine-tuning round: finetune/<folder>/done.json, holding its result."""
    return Markers(ws, posixpath.join("finetune", folder))
