"""`madmine round`: one round of the method as a list of steps, resumable at every boundary.

    score -> select -> rate -> testset -> S -> annotate -> finetune -> test_labels -> evaluate -> report

Round R (the paper's i = R) selects M(R) with the target of earlier rounds, draws T(R+1) from
M(R)'s rated in-domain images, chooses S(R+1) from the rest (so that T is a uniform sample of
M, not what S left) and fine-tunes on it. A final round (`madmine round --round R --final`,
after R rounds of fine-tuning) fine-tunes no more: score -> select -> rate -> testset ->
test_labels -> evaluate -> report, so the last target is measured on the next test set (the
paper's T(3) after two rounds) with no hand work.

Every step calls its step's entry point (`steps/<x>.run(ctx, params)`), as the command line
does; the executor (madmine.pipeline.executor) skips the steps that are done, commits each
finished one with a marker (rounds/round-<R>/steps/<step>.json) and keeps the round's log
(rounds/round-<R>.json). Human steps are waiting points: `run` returns a `Waiting` that says
what is waiting, for whom, and the exact commands to continue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from madmine import names, tables
from madmine.completion import Markers, round_markers
from madmine.config import Config
from madmine.errors import MadmineError
from madmine.pipeline.executor import Executor, Log, Step, Waiting
from madmine.steps import select
from madmine.steps.annotation.exchange import ExportParams, run_export
from madmine.steps.context import StepContext
from madmine.steps.evaluation import run as evaluation
from madmine.steps.evaluation import testset
from madmine.steps.rating import choose
from madmine.steps.repair import describe
from madmine.steps.report import ReportParams
from madmine.steps.report import run as report
from madmine.steps.score import run as scoring


@dataclass
class RoundContext:
    """What every step of round R reads: the step context, the round, its markers, how to talk to people."""

    step: StepContext
    round: int
    markers: Markers
    cli: str = "madmine --config madmine.toml"
    export_format: str = "coco"
    final: bool = False  # measure only: no S, no fine-tuning (the paper's last test set)

    @property
    def ws(self):
        return self.step.ws

    @property
    def config(self) -> Config:
        return self.step.config

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

    def wait_for_labels(self, step: str, which: str, image_ids: set[str]):
        """Done when every image of the set has pixel labels; else an export to label, and the commands."""
        missing = image_ids - self.labelled()
        if not missing:
            return {"labelled": len(image_ids)}
        out = self.ws.path("exports", f"round-{self.round}-{which}-{self.export_format}")
        if self.ws.is_local and not self.ws.exists(out):
            run_export(self.step, ExportParams(self.export_format, Path(out), self.round, which))
        return Waiting(
            step,
            "the annotators",
            f"{len(missing)} of {len(image_ids)} images of the {which!r} set have no pixel labels yet"
            + (f"; export ({'blank masks' if which == 'test' else 'pre-filled'}) in {out}" if self.ws.is_local else ""),
            [
                f"{self.cli} annotate export --format {self.export_format} --set {which} --round {self.round} --out DIR",
                f"{self.cli} annotate import --format {self.export_format} DIR_OF_FINISHED_ANNOTATIONS",
                f"{self.cli} round --round {self.round}",
            ],
        )


class Score(Step):
    name = "score"

    def run(self, ctx):
        # round R troubleshoots what earlier rounds fixed: the newest target fine-tuned before it
        result = scoring.run(ctx.step, scoring.ScoreParams(before_round=ctx.round))
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
        result = select.run(ctx.step, select.SelectParams(ctx.round, run_id=ctx.run_id))
        return {"candidates": result.num_images}


class Rate(Step):
    name = "rate"

    def run(self, ctx):
        if not ctx.final and tables.SELECTED.exists(ctx.ws, round=ctx.round, strategy=tables.MAD):
            return {"skipped": "S already chosen"}
        counted = choose.tally(ctx.step, choose.ChooseParams.from_config(ctx.config, ctx.round))
        lacking = counted.chosen.lacking
        if lacking:
            early = ([f"{ctx.cli} rate select --round {ctx.round} --allow-partial   # to stop rating early and choose S now"]
                     if not ctx.final else [])
            return Waiting(
                "rate",
                "the raters",
                f"{len(lacking)} of {len(counted.candidates)} candidate images may be in domain and have fewer than "
                f"{counted.min_raters} rating(s)",
                [
                    f"{ctx.cli} rate add-rater NAME        # once per rater: a personal link",
                    f"{ctx.cli} rate serve --round {ctx.round}",
                    *early,
                    f"{ctx.cli} round --round {ctx.round}" + (" --final" if ctx.final else ""),
                ],
            )
        return {"images": len(counted.candidates), "votes": counted.votes}


class ChooseS(Step):
    name = "S"

    def run(self, ctx):
        if not tables.SELECTED.exists(ctx.ws, round=ctx.round, strategy=tables.MAD):  # else chosen by `rate select`
            choose.run(ctx.step, choose.ChooseParams.from_config(ctx.config, ctx.round))
        return {"S": len(ctx.selected_ids())}


class AnnotateS(Step):
    name = "annotate"

    def run(self, ctx):
        return ctx.wait_for_labels(self.name, "s", ctx.selected_ids())


class Finetune(Step):
    name = "finetune"

    def run(self, ctx):
        from madmine.steps.train import run as training  # Ray Train: 6.5 s to import, paid only by this step

        result = training.run(ctx.step, training.FinetuneParams(ctx.round))
        lines = [describe(row) for row in result.repair]
        for line in lines:
            ctx.step.say(f"repair on {line}")
        if result.fit_warning:
            ctx.step.say(f"did not fit S: {result.fit_warning}")
        return {"model_version": result.version, "reused": result.already_done, "kept_epoch": result.epoch,
                "s_failures": result.s_failures, "fit_warning": result.fit_warning, "repair": lines}


class Testset(Step):
    name = "testset"

    def run(self, ctx):
        counts = {}
        if not tables.TESTSETS.exists(ctx.ws, round=ctx.round):
            after_s = tables.SELECTED.exists(ctx.ws, round=ctx.round, strategy=tables.MAD)  # `rate select` ran first
            if after_s:
                ctx.step.say(f"S of round {ctx.round} was chosen before its test set: the test set leans toward high MOS")
                counts["drawn_after_s"] = True
            testset.run(ctx.step, testset.TestsetParams(ctx.round, after_s=after_s))
        return {**counts, "images": len(ctx.testset_ids()), "testset": names.testset_name(ctx.round)}


class LabelTestset(Step):
    name = "test_labels"

    def run(self, ctx):
        return ctx.wait_for_labels(self.name, "test", ctx.testset_ids())


class Evaluate(Step):
    name = "evaluate"

    def run(self, ctx):
        result = evaluation.run(ctx.step, evaluation.EvaluateParams())
        return {"cells": len(result.evaluation.cells), "strategies": len(result.quality)}


class Report(Step):
    name = "report"

    def run(self, ctx):
        return {"report": report(ctx.step, ReportParams(ctx.round))}


STEPS: tuple[Step, ...] = (
    Score(), Select(), Rate(), Testset(), ChooseS(), AnnotateS(), Finetune(), LabelTestset(), Evaluate(), Report()
)
STEP_NAMES = tuple(step.name for step in STEPS)
FINAL_SKIPS = ("S", "annotate", "finetune")  # a final round measures; it fine-tunes no more
FINAL_STEP_NAMES = tuple(s for s in STEP_NAMES if s not in FINAL_SKIPS)


def log_path(ws, round_: int) -> str:
    return ws.path("rounds", f"round-{round_}.json")


class Round:
    """The steps of round R over one config and workspace."""

    def __init__(self, config: Config, round_: int, *, ray_address: str | None = None, show_progress: bool = False,
                 config_path: str = "madmine.toml", export_format: str = "coco", final: bool | None = None,
                 say: Callable[[str], None] | None = None):
        if round_ < 0:
            raise MadmineError(f"--round must be >= 0, got {round_}")
        step_ctx = StepContext.of(config, ray_address=ray_address, show_progress=show_progress, say=say)
        self.round, self.ws = round_, step_ctx.ws
        self.log = Log(self.ws, log_path(self.ws, round_), {"round": round_, "config_fingerprint": config.fingerprint()})
        markers = round_markers(self.ws, round_)
        started_final = bool(self.log.record.get("final", False))
        if final is None:
            final = started_final
        if final != started_final and any(markers.is_done(s) for s in FINAL_SKIPS):
            raise MadmineError(
                f"round {round_} already chose S or fine-tuned: it is not a final round; the final measurement after it "
                f"is `madmine round --round {round_ + 1} --final`"
            )
        self.log.record["final"] = final
        self.final = final
        self.ctx = RoundContext(step_ctx, round_, markers, f"madmine --config {config_path}", export_format, final)
        steps = tuple(s for s in STEPS if not (final and s.name in FINAL_SKIPS))
        self.executor = Executor(steps, markers, self.log)

    @property
    def record(self) -> dict:
        return self.log.record

    @property
    def complete(self) -> bool:
        return self.executor.complete

    def run(self, until: str | None = None, on_step: Callable[[str, str], None] | None = None) -> Waiting | None:
        """Run from the first unfinished step; stop at a waiting point (returned), after `until`, or at the end."""
        waiting = self.executor.run(self.ctx, until, on_step)
        if self.ctx.run_id:
            self.log.record["run_id"] = self.ctx.run_id
            self.log.save()
        return waiting
