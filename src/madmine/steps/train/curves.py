"""Every trial's outcome and learning curve, read back from its final checkpoint.

tables/finetune_curves/round-<R>-<strategy>.parquet: round, trial, lr, epoch, train_loss, val_miou
(+ resumed, seconds). Epoch 0 is the parent before any step (val_miou only); val_miou is
dataset mIoU on T(0), null on epochs that were not validated (val_every > 1). The curve of
a resumed trial has each epoch once; `resumed` marks the first epoch trained after a restore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

from madmine import tables
from madmine.errors import MadmineError
from madmine.steps.train import checkpoints
from madmine.steps.train.plan import Plan, trial_name
from madmine.steps.train.storage import RoundStorage


@dataclass(frozen=True)
class Outcome:
    """One learning rate's final state: the model of its last epoch and how it scored on T(0)."""

    lr: float
    trial: str
    val_miou: float
    checkpoint: str  # path of the final checkpoint folder, as the workspace filesystem names it
    curve: tuple[dict, ...]

    @property
    def v_failures(self) -> float | None:
        """Failures on V (the held-out part of S) after the last epoch; None without V."""
        return self.curve[-1].get("v_failures")

    @property
    def v_image_miou(self) -> float | None:
        return self.curve[-1].get("v_image_miou")

    @property
    def t0_drop(self) -> float:
        """How much T(0) mIoU the last epoch lost against the parent (epoch 0)."""
        return float(self.curve[0]["val_miou"]) - self.val_miou


def read_outcomes(plan: Plan, storage: RoundStorage) -> list[Outcome]:
    """The final checkpoint of every trial (the last epoch is always checkpointed)."""
    ws = storage.workspace
    out = []
    for lr in plan.lr_grid:
        trial = trial_name(lr)
        folder = storage.checkpoint(trial, checkpoints.dir_name(plan.epochs))
        try:
            state = json.loads(ws.get_bytes(f"{folder}/{checkpoints.STATE}"))
        except FileNotFoundError as exc:
            raise MadmineError(f"trial {trial} finished without its final checkpoint {ws.url(folder)}") from exc
        if state.get("plan") != plan.fingerprint() or state.get("epoch") != plan.epochs:
            raise MadmineError(f"checkpoint {ws.url(folder)} belongs to another plan; re-run with --restart")
        out.append(Outcome(lr, trial, float(state["curve"][-1]["val_miou"]), folder, tuple(state["curve"])))
    return out


def curves_table(plan: Plan, outcomes: list[Outcome]) -> pa.Table:
    rows = []
    for o in outcomes:
        for point in o.curve:
            rows.append(
                {
                    "round": plan.round,
                    "trial": o.trial,
                    "lr": o.lr,
                    "epoch": point["epoch"],
                    "train_loss": point.get("train_loss"),
                    "val_miou": point.get("val_miou"),
                    "resumed": bool(point.get("resumed")),
                    "seconds": point.get("seconds"),
                    "v_failures": point.get("v_failures"),
                    "v_image_miou": point.get("v_image_miou"),
                }
            )
    return pa.Table.from_pylist(rows, schema=tables.FINETUNE_CURVES.schema)


