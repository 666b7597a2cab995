"""How many labelled images a test set needs (the paper's Fig. 7): the Spearman correlation
(SRCC) between the ranking of the models by dataset mIoU on the whole test set and their
ranking on its first k images, for k = 1..n. The test set's order is its seeded draw, so
the first k images are a random subset; a curve that reaches 1 well before n says the set
ranks models stably.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from madmine import metrics


@dataclass(frozen=True)
class Curve:
    round: int
    models: list[str]
    ks: list[int]
    srcc: list[float]  # NaN where the first k images do not separate the models at all


def curve(intersection: dict[str, np.ndarray], union: dict[str, np.ndarray], ks: list[int] | None = None) -> tuple[list[int], list[float]]:
    """intersection/union: model -> (images x classes) in test-set order, the same images for every model."""
    models = sorted(intersection)
    if len(models) < 2:
        raise ValueError("ranking stability needs at least two models")
    n = {intersection[m].shape[0] for m in models}
    if len(n) != 1:
        raise ValueError("every model must be scored on the same images")
    n_images = n.pop()
    ks = ks or list(range(1, n_images + 1))
    full = [metrics.miou_from_sums(intersection[m].sum(0), union[m].sum(0)) for m in models]
    rhos = []
    for k in ks:
        part = [metrics.miou_from_sums(intersection[m][:k].sum(0), union[m][:k].sum(0)) for m in models]
        rhos.append(metrics.spearman(full, part))
    return ks, rhos


def curves(images: pa.Table | None) -> list[Curve]:
    """One curve per test set from the saved per-image evaluation, over the models scored on
    all of its labelled images."""
    if images is None or images.num_rows == 0:
        return []
    out = []
    rows = images.to_pylist()
    for r in sorted({row["testset_round"] for row in rows}):
        per_model: dict[str, list[dict]] = {}
        for row in rows:
            if row["testset_round"] == r:
                per_model.setdefault(row["label"], []).append(row)
        for model_rows in per_model.values():
            model_rows.sort(key=lambda row: row["position"])
        longest = max(len(v) for v in per_model.values())
        ids = None
        inter, union = {}, {}
        for label, model_rows in per_model.items():
            these = [row["image_id"] for row in model_rows]
            if len(these) != longest or (ids is not None and these != ids):
                continue
            ids = these
            inter[label] = np.array([row["intersection"] for row in model_rows], dtype=np.int64)
            union[label] = np.array([row["union"] for row in model_rows], dtype=np.int64)
        if len(inter) < 2:
            continue
        ks, rhos = curve(inter, union)
        out.append(Curve(r, sorted(inter), ks, rhos))
    return out
