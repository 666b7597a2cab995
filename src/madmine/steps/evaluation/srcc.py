"""How many labelled images a test set needs (the paper's Fig. 7): the Spearman correlation
(SRCC) between the ranking of the models by dataset mIoU on a reference set of test images
and their ranking on k of them.

By default the reference is the whole labelled test set and k runs 1..n over its first k
images (the test set's order is its seeded draw, so the first k images are a random subset).
The paper's protocol is `reference=40, ks=range(20, 40)`: the ranking on 40 images against the
ranking on k = 20..39 of them (`madmine evaluate --srcc-reference 40 --srcc-k 20..39`); with
`draws` > 0 each point is the mean SRCC over that many random k-subsets of the reference
(seeded), instead of the first k images. A curve that reaches 1 well before the reference size
says the set ranks models stably.
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
    reference: int = 0  # images the reference ranking was computed on


def parse_ks(text: str) -> list[int]:
    """'20..39' (inclusive), '5,10,15' or '30' -> the list of k."""
    text = text.strip()
    try:
        if ".." in text:
            low, high = (int(v) for v in text.split("..", 1))
            ks = list(range(low, high + 1))
        else:
            ks = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--srcc-k must look like 20..39 or 5,10,15, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise ValueError(f"--srcc-k must name k >= 1, got {text!r}")
    return ks


def curve(intersection: dict[str, np.ndarray], union: dict[str, np.ndarray], ks: list[int] | None = None,
          reference: int | None = None, draws: int = 0, seed: int = 0) -> tuple[list[int], list[float]]:
    """intersection/union: model -> (images x classes) in test-set order, the same images for every model.
    The reference ranking uses the first `reference` images (all when None)."""
    models = sorted(intersection)
    if len(models) < 2:
        raise ValueError("ranking stability needs at least two models")
    n = {intersection[m].shape[0] for m in models}
    if len(n) != 1:
        raise ValueError("every model must be scored on the same images")
    n_images = n.pop()
    reference = n_images if reference is None else reference
    if not 1 <= reference <= n_images:
        raise ValueError(f"the reference needs {reference} labelled images; the test set has {n_images}")
    ks = ks or list(range(1, reference + 1))
    if max(ks) > reference:
        raise ValueError(f"k = {max(ks)} is larger than the reference of {reference} images")
    inter = {m: intersection[m][:reference] for m in models}
    uni = {m: union[m][:reference] for m in models}
    full = [metrics.miou_from_sums(inter[m].sum(0), uni[m].sum(0)) for m in models]
    rng = np.random.default_rng(seed)
    rhos = []
    for k in ks:
        subsets = [np.arange(k)] if draws <= 0 else [rng.choice(reference, size=k, replace=False) for _ in range(draws)]
        values = []
        for rows in subsets:
            part = [metrics.miou_from_sums(inter[m][rows].sum(0), uni[m][rows].sum(0)) for m in models]
            values.append(metrics.spearman(full, part))
        finite = [v for v in values if np.isfinite(v)]
        rhos.append(float(np.mean(finite)) if finite else float("nan"))
    return ks, rhos


def curves(images: pa.Table | None, reference: int | None = None, ks: list[int] | None = None,
           draws: int = 0, seed: int = 0) -> list[Curve]:
    """One curve per test set from the saved per-image evaluation, over the models scored on
    all of its labelled images. With `reference`, test sets with fewer labelled images are left out."""
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
        if len(inter) < 2 or (reference is not None and longest < reference):
            continue
        ks_r, rhos = curve(inter, union, ks, reference, draws, seed)
        out.append(Curve(r, sorted(inter), ks_r, rhos, reference or longest))
    return out
