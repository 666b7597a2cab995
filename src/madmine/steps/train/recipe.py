"""The learning rate at each step and whether batch norm learns: pure functions of the plan's
settings ([finetune] schedule, batch_norm), so that the plan can say before training what will
happen without importing torch (the optimiser itself is built in loop.py).

Schedules, over the `total` steps of a trial (step i = 0 .. total - 1):
- poly (the paper's, DeepLab's): base * (1 - i / total) ** power;
- constant: base;
- cosine: base * (1 + cos(pi * i / total)) / 2, as torch's CosineAnnealingLR to 0;
- onecycle: as torch's OneCycleLR (the demo's target was trained with it): from base / 25 up
  to base over the first 15% of the steps, then down to base / 25e4, both on a cosine.
"""

from __future__ import annotations

import math

ONECYCLE_WARMUP = 0.15  # share of the steps spent rising
ONECYCLE_DIV = 25.0  # the first rate is base / 25
ONECYCLE_FINAL_DIV = 1e4  # the last is the first / 1e4
BATCH_NORM_MIN_BATCH = 8  # "auto": batches this large estimate batch-norm statistics well enough


def poly_lr(base: float, iteration: int, total: int, power: float) -> float:
    """The poly schedule of DeepLab: base * (1 - iteration / total) ** power."""
    return base * max(0.0, 1.0 - iteration / max(total, 1)) ** power


def _cos(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)


def onecycle_lr(base: float, iteration: int, total: int) -> float:
    first = base / ONECYCLE_DIV
    last = first / ONECYCLE_FINAL_DIV
    peak = float(ONECYCLE_WARMUP * total) - 1
    if iteration <= peak:
        return _cos(first, base, iteration / peak) if peak > 0 else base
    return _cos(base, last, (iteration - peak) / max(total - 1 - peak, 1e-12))


def learning_rate(schedule: str, base: float, iteration: int, total: int, power: float = 0.9) -> float:
    """The rate of step `iteration` (0-based) of `total` under one of the schedules."""
    if schedule == "poly":
        return poly_lr(base, iteration, total, power)
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * (1 + math.cos(math.pi * min(iteration, total) / max(total, 1))) / 2
    if schedule == "onecycle":
        return onecycle_lr(base, iteration, total)
    raise ValueError(f"unknown schedule {schedule!r}")


def summed_lr(schedule: str, base: float, total: int, power: float = 0.9) -> float:
    """The sum of the rates over every step: how far, in learning-rate units, a trial can move the weights."""
    return float(sum(learning_rate(schedule, base, i, total, power) for i in range(total)))


def trains_batch_norm(mode: str, per_worker_batch: int) -> bool:
    """Whether batch norm learns its statistics: "train", "freeze", or "auto" (trained when a worker's
    batch holds at least BATCH_NORM_MIN_BATCH images: batches of 2 estimate them badly)."""
    if mode == "train":
        return True
    if mode == "freeze":
        return False
    if mode == "auto":
        return per_worker_batch >= BATCH_NORM_MIN_BATCH
    raise ValueError(f"unknown batch_norm {mode!r}")
