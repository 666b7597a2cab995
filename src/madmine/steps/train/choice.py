"""Which checkpoint wins: one rule for the validated epochs of a trial and for the trials of the grid.

Every validated epoch of every learning rate is a candidate (the parent, epoch 0, is not: the
result must be a fine-tuned model). With choose_by = "t0" (the paper's) the highest dataset
mIoU on T(0) wins. With "validation" the candidates whose T(0) mIoU fell by at most
max_t0_drop against the parent's come first, and among them the fewest failures on V (the
held-out part of S), then the higher mean per-image mIoU on V; when none stays within the
bound, the highest T(0) mIoU. Ties go to the earlier epoch (fewer changes), then to the
smaller learning rate (the gentler one).
"""

from __future__ import annotations

import math


def key(point: dict, parent: dict, choose_by: str, max_t0_drop: float) -> tuple:
    """A sort key of one validated curve point (smaller is better), against the parent's point (epoch 0)."""
    t0 = point.get("val_miou")
    t0 = -math.inf if t0 is None or t0 != t0 else float(t0)
    if choose_by == "validation" and point.get("v_failures") is not None:
        drop = float(parent["val_miou"]) - t0
        if drop <= max_t0_drop + 1e-12:
            return (0, float(point["v_failures"]), -float(point.get("v_image_miou") or 0.0))
    return (1, -t0, 0.0)


def better(point: dict, best: dict | None, parent: dict, choose_by: str, max_t0_drop: float) -> bool:
    """Whether a newly validated point beats the trial's best so far (an equal one does not: earlier wins)."""
    if best is None:
        return True
    return key(point, parent, choose_by, max_t0_drop) < key(best, parent, choose_by, max_t0_drop)
