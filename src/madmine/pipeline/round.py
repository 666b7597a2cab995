"""`madmine round`: one round of the method as a list of steps, resumable at every boundary.

    score -> select -> rate -> S -> annotate -> finetune -> testset -> test_labels -> evaluate -> report

Round R (the paper's i = R) selects M(R) with the target of earlier rounds, fine-tunes on
S(R+1) and draws T(R+1). A final round (`madmine round --round R --final`, after R rounds of
fine-tuning) fine-tunes no more: score -> select -> rate -> testset -> test_labels -> evaluate
-> report, so the last target is measured on the next test set (the paper's T(3) after two
rounds) with no hand work.

Each step has `is_done(ctx)` and `run(ctx)`; the executor (`Round.run`) skips the steps that
are done, runs the first one that is not, and commits it with a completion marker
(rounds/round-<R>/steps/<step>.json, madmine.completion) once it finished, so re-running
continues from the first unfinished step, after a crash too. Human steps are waiting
points: `run` returns a `Waiting` that says what is waiting, for whom, and the exact
commands to continue. The registry (rounds/round-<R>.json) is the round's log: per step its
status (running, waiting, failed, done), timings and counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from madmine import tables
from madmine.completion import Markers, utc_now
from madmine.config import Config
from madmine.errors import MadmineError
from madmine.steps.annotation.exchange import export
from madmine.steps.evaluation import evaluate as ev
from madmine.steps.evaluation import sources, testset
from madmine.steps.rating import selection, store
from madmine.steps.rating.roundset import load_round
from madmine.steps.report import write_report
from madmine.steps.score.run import score
from madmine.steps.select import run_select
from madmine.steps.train import finetune
from madmine.steps.train.versions import with_latest_target
from madmine.workspace import Workspace


@dataclass
class Waiting:
    """A human step that cannot finish by itself."""

    stage: str
    who: str
    what: str
    commands: list[str]


@dataclass
class RoundStatus:
    round: int
    stages: dict = field(default_factory=dict)
    waiting: Waiting | None = None
    final: bool = False

    @property
    def complete(self) -> bool:
        return all(self.stages.get(s, {}).get("status") == "done" for s in (FINAL_STAGES if self.final else STAGES))


@dataclass
class RoundContext:
    """What every step of round R reads: the config, the workspace, how to reach people and Ray."""

    config: Config
    round: int
    ws: Workspace
    markers: Markers
    ray_address: str | None = None
    show_progress: bool = False
    cli: str = "madmine --config madmine.toml"
    export_format: str = "coco"
    final: bool = False  # measure only: no S, no fine-tuning (the paper's last test set)

    @property
    def run_id(self) -> str | None:
        """The scoring run this round selects from (what its score step committed)."""
        done = self.markers.get("score")
        return None if done is None else done.get("run_id")

    def labelled(self) -> set[str]:
        labels = tables.LABELS.read(self.ws)
        return set(labels.column("image_id").to_pylist()) if labels is not None else set()

    def selected_ids(self) -> set[str]:
        return set(tables.SELECTED.read_file(self.ws, round=self.round, strategy=tables.MAD).column("image_id").to_pylist())

    def testset_ids(self) -> set[str]:
        return set(tables.TESTSETS.read_file(self.ws, round=self.round).column("image_id").to_pylist())

    def wait_for_labels(self, stage: str, which: str, image_ids: set[str]):
        """Done when every image of the set has pixel labels; else an export to label, and the commands."""
        missing = image_ids - self.labelled()
        if not missing:
            return {"labelled": len(image_ids)}
        out = self.ws.path("exports", f"round-{self.round}-{which}-{self.export_format}")
        if self.ws.is_local and not self.ws.exists(out):
            export(self.ws, self.config, self.export_format, Path(out), self.round, which)
        return Waiting(
            stage,
            "the annotators",
            f"{len(missing)} of {len(image_ids)} images of the {which!r} set have no pixel labels yet"
            + (f"; export ({'blank masks' if which == 'test' else 'pre-filled'}) in {out}" if self.ws.is_local else ""),
            [
                f"{self.cli} annotate export --format {self.export_format} --set {which} --round {self.round} --out DIR",
                f"{self.cli} annotate import --format {self.export_format} DIR_OF_FINISHED_ANNOTATIONS",
                f"{self.cli} round --round {self.round}",
            ],
        )


class Step:
    """One step of a round: done once its marker exists; `run` returns counts or a Waiting."""

    name = ""

    def is_done(self, ctx: RoundContext) -> bool:
        return ctx.markers.is_done(self.name)

    def run(self, ctx: RoundContext) -> dict | Waiting:
        raise NotImplementedError


class Score(Step):
    name = "score"

    def run(self, ctx):
        config = with_latest_target(ctx.config, ctx.ws, before_round=ctx.round)  # what earlier rounds fixed
        result = score(config, ray_address=ctx.ray_address, show_progress=ctx.show_progress)
        return {"run_id": result.run_id, "images": result.images_total, "errors": result.errors,
                "scored_now": result.images_scored}


class Select(Step):
    name = "select"

    def run(self, ctx):
        if not tables.BOUNDS.exists(ctx.ws):
            return Waiting(
                "select",
                "the operator",
                "size bounds per class are missing (quartiles of object sizes in the labelled training set)",
                [f"{ctx.cli} bounds LABELS_DIR", f"{ctx.cli} round --round {ctx.round}"],
            )
        result = run_select(ctx.config, ctx.round, run_id=ctx.run_id)
        return {"candidates": result.num_images}


class Rate(Step):
    name = "rate"

    def run(self, ctx):
        if not ctx.final and tables.SELECTED.exists(ctx.ws, round=ctx.round, strategy=tables.MAD):
            return {"skipped": "S already chosen"}
        rs = load_round(ctx.ws, ctx.config, ctx.round)
        latest = store.latest([e for e in store.load_events(ctx.ws, ctx.round) if e["image_id"] in rs])
        need = selection.required_raters(ctx.config, ctx.ws)
        lacking = selection.select(latest, ctx.round, rs.uris, ctx.config.selection.n4, need).lacking
        if lacking:
            early = ([f"{ctx.cli} rate select --round {ctx.round} --allow-partial   # to stop rating early and choose S now"]
                     if not ctx.final else [])
            return Waiting(
                "rate",
                "the raters",
                f"{len(lacking)} of {len(rs.image_ids)} candidate images may be in domain and have fewer than {need} "
                "rating(s)",
                [
                    f"{ctx.cli} rate add-rater NAME        # once per rater: a personal link",
                    f"{ctx.cli} rate serve --round {ctx.round}",
                    *early,
                    f"{ctx.cli} round --round {ctx.round}" + (" --final" if ctx.final else ""),
                ],
            )
        return {"images": len(rs.image_ids), "votes": len(latest)}


class ChooseS(Step):
    name = "S"

    def run(self, ctx):
        if not tables.SELECTED.exists(ctx.ws, round=ctx.round, strategy=tables.MAD):  # else chosen by `rate select`
            rs = load_round(ctx.ws, ctx.config, ctx.round)
            need = selection.required_raters(ctx.config, ctx.ws)
            chosen = selection.select(
                store.latest([e for e in store.load_events(ctx.ws, ctx.round) if e["image_id"] in rs]),
                ctx.round,
                rs.uris,
                ctx.config.selection.n4,
                need,
            )
            selection.check_complete(chosen, need, allow_partial=False)
            selection.write(ctx.ws, ctx.round, chosen)
        return {"S": len(ctx.selected_ids())}


class AnnotateS(Step):
    name = "annotate"

    def run(self, ctx):
        return ctx.wait_for_labels(self.name, "s", ctx.selected_ids())


class Finetune(Step):
    name = "finetune"

    def run(self, ctx):
        result = finetune(ctx.config, ctx.round, ray_address=ctx.ray_address, show_progress=ctx.show_progress)
        return {"model_version": result.version, "reused": result.already_done}


class Testset(Step):
    name = "testset"

    def run(self, ctx):
        if not tables.TESTSETS.exists(ctx.ws, round=ctx.round):
            testset.build(ctx.config, ctx.ws, ctx.round, require_s=not ctx.final)
        return {"images": len(ctx.testset_ids()), "testset": sources.testset_name(ctx.round)}


class LabelTestset(Step):
    name = "test_labels"

    def run(self, ctx):
        return ctx.wait_for_labels(self.name, "test", ctx.testset_ids())


class Evaluate(Step):
    name = "evaluate"

    def run(self, ctx):
        evaluation = ev.evaluate(ctx.config, ctx.ws, show_progress=ctx.show_progress)
        ev.save(ctx.ws, evaluation)  # the report reads the saved tables
        return {"cells": len(evaluation.cells)}


class Report(Step):
    name = "report"

    def run(self, ctx):
        return {"report": str(write_report(ctx.config, ctx.ws, ctx.round, None))}


STEPS: tuple[Step, ...] = (
    Score(), Select(), Rate(), ChooseS(), AnnotateS(), Finetune(), Testset(), LabelTestset(), Evaluate(), Report()
)
STAGES = tuple(step.name for step in STEPS)
FINAL_SKIPS = ("S", "annotate", "finetune")  # a final round measures; it fine-tunes no more
FINAL_STAGES = tuple(s for s in STAGES if s not in FINAL_SKIPS)


def registry_path(ws: Workspace, round_: int) -> str:
    return ws.path("rounds", f"round-{round_}.json")


def step_markers(ws: Workspace, round_: int) -> Markers:
    return Markers(ws, f"rounds/round-{round_}/steps")


class Round:
    """The steps of round R over one config and workspace."""

    def __init__(self, config: Config, round_: int, *, ray_address: str | None = None, show_progress: bool = False,
                 config_path: str = "madmine.toml", export_format: str = "coco", final: bool | None = None):
        if round_ < 0:
            raise MadmineError(f"--round must be >= 0, got {round_}")
        ws = Workspace.from_config(config)
        self.round, self.ws = round_, ws
        path = registry_path(ws, round_)
        self.record = ws.get_json(path) if ws.exists(path) else {
            "round": round_,
            "created_at": utc_now(),
            "config_fingerprint": config.fingerprint(),
            "stages": {},
        }
        markers = step_markers(ws, round_)
        started_final = bool(self.record.get("final", False))
        if final is None:
            final = started_final
        if final != started_final and any(markers.is_done(s) for s in FINAL_SKIPS):
            raise MadmineError(
                f"round {round_} already chose S or fine-tuned: it is not a final round; the final measurement after it "
                f"is `madmine round --round {round_ + 1} --final`"
            )
        self.record["final"] = final
        self.final = final
        self.ctx = RoundContext(config, round_, ws, markers, ray_address, show_progress,
                                f"madmine --config {config_path}", export_format, final)
        self._adopt_logged_steps()

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(s for s in STEPS if not (self.final and s.name in FINAL_SKIPS))

    def _adopt_logged_steps(self) -> None:
        """Workspaces written before step markers existed logged finished steps in the registry only."""
        for name, entry in self.record["stages"].items():
            if entry.get("status") == "done" and not self.ctx.markers.is_done(name):
                counts = dict(entry.get("counts") or {})
                if name == "score" and "run_id" not in counts:
                    counts["run_id"] = self.record.get("run_id")
                self.ctx.markers.mark_done(name, counts)

    # ---- registry ----------------------------------------------------------------------
    def _save(self) -> None:
        self.record["updated_at"] = utc_now()
        self.ws.put_json(registry_path(self.ws, self.round), self.record)

    def _log(self, stage: str, status: str, **info) -> None:
        entry = self.record["stages"].setdefault(stage, {})
        entry.update(status=status, **info)
        self._save()

    # ---- executor ----------------------------------------------------------------------
    def run(self, until: str | None = None, on_stage: Callable[[str, str], None] | None = None) -> RoundStatus:
        """Run from the first unfinished step; stop at a waiting point, after `until`, or at the end."""
        names = [step.name for step in self.steps]
        if until is not None and until not in names:
            raise MadmineError(f"--until must be one of {', '.join(names)}, got {until!r}")
        tell = on_stage or (lambda stage, text: None)
        status = RoundStatus(self.round, self.record["stages"], final=self.final)
        for step in self.steps:
            if step.is_done(self.ctx):
                tell(step.name, "done before")
                if step.name == until:
                    break
                continue
            started = time.perf_counter()
            self._log(step.name, "running", started_at=utc_now())
            tell(step.name, "running")
            try:
                outcome = step.run(self.ctx)
            except Exception as exc:
                self._log(step.name, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
                raise
            seconds = time.perf_counter() - started
            if isinstance(outcome, Waiting):
                self._log(step.name, "waiting", seconds=seconds, waiting_for=outcome.who, what=outcome.what)
                status.waiting = outcome
                return status
            if step.name == "score":
                self.record["run_id"] = outcome["run_id"]
            self.ctx.markers.mark_done(step.name, outcome)
            self._log(step.name, "done", seconds=round(seconds, 2), finished_at=utc_now(), counts=outcome)
            tell(step.name, f"done in {seconds:.1f} s {outcome}")
            if step.name == until:
                break
        return status
