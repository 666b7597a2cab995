"""One executor for every sequence of steps: a round, a night.

A pipeline is a list of steps; each step has a `name` and `run(ctx)`, which returns counts (a
dict) or a `Waiting` when people must act first. The executor, not the step, owns completion
(madmine.completion: a step is done once its marker exists, and a step's marker is written only
after it returned) and the run's log: one JSON record per round or night with every step's
status (running, waiting, failed, done), timings and counts. Re-running a pipeline skips what is
done and continues from the first unfinished step, after a crash too.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from madmine.completion import Markers, utc_now
from madmine.errors import MadmineError
from madmine.workspace import Workspace


@dataclass
class Waiting:
    """A step that cannot finish by itself: what is waiting, for whom, and the commands to continue."""

    step: str
    who: str
    what: str
    commands: list[str]


class Step(ABC):
    """One step of a pipeline; `run(ctx)` returns counts, or a Waiting."""

    name = ""

    @abstractmethod
    def run(self, ctx) -> dict | Waiting:
        """Do the step (or find that it waits on people) and return its counts."""


class Log:
    """A pipeline's record: a JSON file with its own fields and `steps` (name -> status, timings, counts)."""

    def __init__(self, ws: Workspace, path: str, fresh: dict):
        self.ws, self.path = ws, path
        self.record = ws.get_json(path) if ws.exists(path) else {**fresh, "created_at": utc_now(), "steps": {}}

    @property
    def steps(self) -> dict:
        return self.record["steps"]

    def save(self) -> None:
        self.record["updated_at"] = utc_now()
        self.ws.put_json(self.path, self.record)

    def step(self, name: str, status: str, **info) -> None:
        entry = self.steps.setdefault(name, {})
        entry.update(status=status, **info)
        self.save()


class Executor:
    """Runs `steps` in order over one context: skips the done ones, commits each finished one."""

    def __init__(self, steps: tuple[Step, ...], markers: Markers, log: Log):
        self.steps, self.markers, self.log = steps, markers, log

    @property
    def names(self) -> list[str]:
        return [step.name for step in self.steps]

    def is_done(self, name: str) -> bool:
        return self.markers.is_done(name)

    def counts(self, name: str) -> dict | None:
        """What a done step returned (its marker's record), or None."""
        return self.markers.get(name)

    @property
    def complete(self) -> bool:
        return all(self.is_done(name) for name in self.names)

    def run(self, ctx, until: str | None = None, tell: Callable[[str, str], None] | None = None) -> Waiting | None:
        """Run from the first unfinished step; stop at a Waiting (returned), after `until`, or at the end.
        `tell(step, text)` hears each step's progress (running, done before, done in N s)."""
        if until is not None and until not in self.names:
            raise MadmineError(f"--until must be one of {', '.join(self.names)}, got {until!r}")
        tell = tell or (lambda name, text: None)
        for step in self.steps:
            if self.is_done(step.name):
                tell(step.name, "done before")
            else:
                waiting = self._run(step, ctx, tell)
                if waiting is not None:
                    return waiting
            if step.name == until:
                break
        return None

    def _run(self, step: Step, ctx, tell) -> Waiting | None:
        started = time.perf_counter()
        self.log.step(step.name, "running", started_at=utc_now())
        tell(step.name, "running")
        try:
            outcome = step.run(ctx)
        except BaseException as exc:
            self.log.step(step.name, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        seconds = time.perf_counter() - started
        if isinstance(outcome, Waiting):
            self.log.step(step.name, "waiting", seconds=seconds, waiting_for=outcome.who, what=outcome.what)
            return outcome
        self.markers.mark_done(step.name, outcome)
        self.log.step(step.name, "done", seconds=round(seconds, 2), finished_at=utc_now(), counts=outcome)
        tell(step.name, f"done in {seconds:.1f} s {outcome}")
        return None
