"""Every trial's outcome and learning curve, read back from its final checkpoint.

tables/finetune_curves/round-<R>-<strategy>.parquet: round, trial, lr, epoch, step, train_loss,
val_miou (+ resumed, seconds, v_failures, v_image_miou, s_failures, s_image_miou, kept). Epoch 0
is the parent before any step; val_miou is dataset mIoU on T(0), null on epochs that were not
validated (val_every > 1); s_failures is the share of the S it trains on that still fails; kept
marks the epoch whose checkpoint the trial keeps (choice.py). The curve of a resumed trial has
each epoch once; `resumed` marks the first epoch trained after a restore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa

from madmine import tables
from madmine.errors import MadmineError
from madmine.steps.train import checkpoints
from madmine.steps.train.plan import Plan, trial_name
from madmine.steps.train.storage import RoundStorage


@dataclass(frozen=True)
class Outcome:
    """One learning rate's result: its kept checkpoint (the best validated epoch) and how it scored."""

    lr: float
    trial: str
    val_miou: float  # dataset mIoU on T(0) of the kept epoch
    checkpoint: str  # path of the final checkpoint folder, as the workspace filesystem names it
    curve: tuple[dict, ...]
    epoch: int = -1  # the kept epoch (-1: the last)
    weights: str = checkpoints.MODEL  # the file of the final checkpoint holding the kept epoch's weights
    images: dict = field(default_factory=dict)  # "parent" and "best": set ("t0", "v", "s") -> per-image mIoU

    @property
    def point(self) -> dict:
        """The kept epoch's curve point."""
        return next((p for p in self.curve if p["epoch"] == self.epoch), self.curve[-1])

    @property
    def parent(self) -> dict:
        return self.curve[0]

    @property
    def v_failures(self) -> float | None:
        """Failures on V (the held-out part of S) at the kept epoch; None without V."""
        return self.point.get("v_failures")

    @property
    def v_image_miou(self) -> float | None:
        return self.point.get("v_image_miou")

    @property
    def s_failures(self) -> float | None:
        """Failures on the S it trained on, at the kept epoch: did it fit S?"""
        return self.point.get("s_failures")

    @property
    def t0_drop(self) -> float:
        """How much T(0) mIoU the kept epoch lost against the parent (epoch 0)."""
        return float(self.parent["val_miou"]) - self.val_miou


def read_outcomes(plan: Plan, storage: RoundStorage) -> list[Outcome]:
    """The final checkpoint of every trial (the last epoch is always checkpointed), with the epoch it kept."""
    ws = storage.workspace
    out = []
    for lr in plan.lr_grid:
        trial = trial_name(lr)
        folder = storage.checkpoint(trial, checkpoints.dir_name(plan.last_epoch))
        try:
            state = json.loads(ws.get_bytes(f"{folder}/{checkpoints.STATE}"))
        except FileNotFoundError as exc:
            raise MadmineError(f"trial {trial} finished without its final checkpoint {ws.url(folder)}") from exc
        if state.get("plan") != plan.fingerprint() or state.get("epoch") != plan.last_epoch or not state.get("best"):
            raise MadmineError(f"checkpoint {ws.url(folder)} belongs to another plan; re-run with --restart")
        best = state["best"]
        out.append(Outcome(lr, trial, float(best["point"]["val_miou"]), folder, tuple(state["curve"]), best["epoch"],
                           checkpoints.kept_weights(state), state.get("images") or {}))
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
                    "step": point.get("step"),
                    "train_loss": point.get("train_loss"),
                    "val_miou": point.get("val_miou"),
                    "resumed": bool(point.get("resumed")),
                    "seconds": point.get("seconds"),
                    "v_failures": point.get("v_failures"),
                    "v_image_miou": point.get("v_image_miou"),
                    "s_failures": point.get("s_failures"),
                    "s_image_miou": point.get("s_image_miou"),
                    "kept": point["epoch"] == o.epoch,
                }
            )
    return pa.Table.from_pylist(rows, schema=tables.FINETUNE_CURVES.schema)


