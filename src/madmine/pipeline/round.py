"""`madmine round`: one round of the method as resumable stages with a run registry.

    score -> select -> rate -> S -> annotate -> finetune -> testset -> test labels -> evaluate -> report

Each stage asks the workspace whether its work is done (a committed run, a table, a
model version) and does it only if not, so re-running continues from the first
unfinished stage, after a crash too. Human stages are waiting points: the command stops
there, says what is waiting, for whom, and the exact command to continue. The registry
(rounds/round-<R>.json) records per stage its status, timings and counts.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from madmine.config import Config
from madmine.errors import MadmineError
from madmine.workspace import Workspace

STAGES = ("score", "select", "rate", "S", "annotate", "finetune", "testset", "test_labels", "evaluate", "report")


@dataclass
class Waiting:
    """A human stage that cannot finish by itself."""

    stage: str
    who: str
    what: str
    commands: list[str]


@dataclass
class RoundStatus:
    round: int
    stages: dict = field(default_factory=dict)
    waiting: Waiting | None = None

    @property
    def complete(self) -> bool:
        return all(self.stages.get(s, {}).get("status") == "done" for s in STAGES)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def registry_path(ws: Workspace, round_: int) -> str:
    return ws.path("rounds", f"round-{round_}.json")


class Round:
    """The stages of round R over one config and workspace."""

    def __init__(self, config: Config, round_: int, *, ray_address: str | None = None, show_progress: bool = False,
                 config_path: str = "madmine.toml", export_format: str = "coco"):
        if round_ < 0:
            raise MadmineError(f"--round must be >= 0, got {round_}")
        self.config = config
        self.round = round_
        self.ws = Workspace.from_config(config)
        self.ray_address = ray_address
        self.show_progress = show_progress
        self.cli = f"madmine --config {config_path}"
        self.export_format = export_format
        path = registry_path(self.ws, round_)
        self.record = self.ws.get_json(path) if self.ws.exists(path) else {
            "round": round_,
            "created_at": _now(),
            "config_fingerprint": config.fingerprint(),
            "stages": {},
        }

    # ---- registry ----------------------------------------------------------------------
    def _save(self) -> None:
        self.record["updated_at"] = _now()
        self.ws.put_json(registry_path(self.ws, self.round), self.record)

    def _mark(self, stage: str, status: str, **info) -> None:
        entry = self.record["stages"].setdefault(stage, {})
        entry.update(status=status, **info)
        self._save()

    # ---- stages: each returns counts when done, or a Waiting ---------------------------
    def stage_score(self):
        from madmine.steps.score import score
        from madmine.steps.train.versions import with_latest_target

        config = with_latest_target(self.config, self.ws, before_round=self.round)  # what earlier rounds fixed
        result = score(config, ray_address=self.ray_address, show_progress=self.show_progress)
        self.record["run_id"] = result.run_id
        return {"images": result.images_total, "errors": result.errors, "scored_now": result.images_scored}

    def _candidates_path(self) -> str:
        from madmine.steps.select import candidates_path

        return candidates_path(self.ws, self.round, "mad")

    def stage_select(self):
        import pyarrow.parquet as pq

        path = self._candidates_path()
        if self.ws.exists(path):
            table = pq.read_table(path, filesystem=self.ws.fs)
            if set(table.column("run_id").to_pylist()) <= {self.record.get("run_id")}:
                return {"candidates": len(set(table.column("image_id").to_pylist())), "reused": True}
        if not self.ws.table_files("bounds"):
            return Waiting(
                "select",
                "the operator",
                "size bounds per class are missing (quartiles of object sizes in the labelled training set)",
                [f"{self.cli} bounds LABELS_DIR", f"{self.cli} round --round {self.round}"],
            )
        from madmine.steps.select import run_select

        result = run_select(self.config, self.round, run_id=self.record.get("run_id"))
        return {"candidates": result.num_images}

    def _selected_path(self) -> str:
        from madmine.steps.rating.selection import selected_path

        return selected_path(self.ws, self.round)

    def _round_set(self):
        from madmine.steps.rating.roundset import load_round

        return load_round(self.ws, self.config, self.round)

    def stage_rate(self):
        if self.ws.exists(self._selected_path()):
            return {"skipped": "S already chosen"}
        from madmine.steps.rating import store

        rs = self._round_set()
        latest = store.latest(store.load_events(self.ws, self.round))
        raters_per_image: dict[str, int] = {}
        for image_id, _rater in latest:
            raters_per_image[image_id] = raters_per_image.get(image_id, 0) + 1
        need = self.config.rating.min_raters
        images = list(rs.image_ids)
        enough = sum(1 for i in images if raters_per_image.get(i, 0) >= need)
        if enough < len(images):
            return Waiting(
                "rate",
                "the raters",
                f"{enough} of {len(images)} candidate images have >= {need} rating(s)",
                [
                    f"{self.cli} rate add-rater NAME        # once per rater: a personal link",
                    f"{self.cli} rate serve --round {self.round}",
                    f"{self.cli} rate select --round {self.round}   # to stop rating early and choose S now",
                    f"{self.cli} round --round {self.round}",
                ],
            )
        return {"images": len(images), "votes": len(latest)}

    def stage_S(self):
        import pyarrow.parquet as pq

        path = self._selected_path()
        if not self.ws.exists(path):
            from madmine.steps.rating import selection, store

            rs = self._round_set()
            chosen = selection.select(
                store.latest(store.load_events(self.ws, self.round)),
                self.round,
                rs.uris,
                self.config.selection.n4,
                self.config.rating.min_raters,
            )
            selection.write(self.ws, self.round, chosen)
        return {"S": pq.read_table(path, filesystem=self.ws.fs).num_rows}

    def _labelled(self) -> set[str]:
        labels = self.ws.read_table("labels")
        return set(labels.column("image_id").to_pylist()) if labels is not None else set()

    def _export_dir(self, which: str) -> str:
        return self.ws.path("exports", f"round-{self.round}-{which}-{self.export_format}")

    def _wait_for_labels(self, stage: str, which: str, image_ids: set[str]):
        missing = image_ids - self._labelled()
        if not missing:
            return {"labelled": len(image_ids)}
        out = self._export_dir(which)
        if self.ws.is_local and not self.ws.exists(out):
            from pathlib import Path

            from madmine.steps.annotation.exchange import export

            export(self.ws, self.config, self.export_format, Path(out), self.round, which)
        return Waiting(
            stage,
            "the annotators",
            f"{len(missing)} of {len(image_ids)} images of the {which!r} set have no pixel labels yet"
            + (f"; pre-annotated export in {out}" if self.ws.is_local else ""),
            [
                f"{self.cli} annotate export --format {self.export_format} --set {which} --round {self.round} --out DIR",
                f"{self.cli} annotate import --format {self.export_format} DIR_OF_FINISHED_ANNOTATIONS",
                f"{self.cli} round --round {self.round}",
            ],
        )

    def stage_annotate(self):
        import pyarrow.parquet as pq

        selected = pq.read_table(self._selected_path(), filesystem=self.ws.fs)
        return self._wait_for_labels("annotate", "s", set(selected.column("image_id").to_pylist()))

    def stage_finetune(self):
        from madmine.steps.train import finetune

        result = finetune(self.config, self.round, ray_address=self.ray_address, show_progress=self.show_progress)
        return {"model_version": getattr(result, "model_version", None), "reused": bool(getattr(result, "already_done", False))}

    def _testset_ids(self) -> set[str]:
        from madmine.steps.evaluation.testset import testset_path

        table = self.ws.read_parquet([testset_path(self.ws, self.round)])
        return set(table.column("image_id").to_pylist())

    def stage_testset(self):
        from madmine.steps.evaluation.testset import build, testset_path

        if not self.ws.exists(testset_path(self.ws, self.round)):
            build(self.config, self.ws, self.round)
        return {"images": len(self._testset_ids())}

    def stage_test_labels(self):
        return self._wait_for_labels("test_labels", "test", self._testset_ids())

    def stage_evaluate(self):
        from madmine.steps.evaluation.evaluate import evaluate

        evaluation = evaluate(self.config, self.ws, show_progress=self.show_progress)
        return {"cells": len(getattr(evaluation, "cells", []) or [])}

    def stage_report(self):
        from madmine.steps.report import write_report

        return {"report": str(write_report(self.config, self.ws, self.round, None))}

    # ---- driver ------------------------------------------------------------------------
    def run(self, until: str | None = None, on_stage: Callable[[str, str], None] | None = None) -> RoundStatus:
        """Run from the first unfinished stage; stop at a waiting point, after `until`, or at the end."""
        if until is not None and until not in STAGES:
            raise MadmineError(f"--until must be one of {', '.join(STAGES)}, got {until!r}")
        tell = on_stage or (lambda stage, text: None)
        status = RoundStatus(self.round, self.record["stages"])
        for stage in STAGES:
            entry = self.record["stages"].get(stage, {})
            if entry.get("status") == "done":
                tell(stage, "done before")
                if stage == until:
                    break
                continue
            started = time.perf_counter()
            self._mark(stage, "running", started_at=_now())
            tell(stage, "running")
            try:
                outcome = getattr(self, f"stage_{stage}")()
            except Exception as exc:
                self._mark(stage, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
                raise
            seconds = time.perf_counter() - started
            if isinstance(outcome, Waiting):
                self._mark(stage, "waiting", seconds=seconds, waiting_for=outcome.who, what=outcome.what)
                status.waiting = outcome
                return status
            self._mark(stage, "done", seconds=round(seconds, 2), finished_at=_now(), counts=outcome)
            tell(stage, f"done in {seconds:.1f} s {outcome}")
            if stage == until:
                break
        return status
