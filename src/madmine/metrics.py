"""THE metrics of madmine. Selection, evaluation and reports import these; nothing else
computes IoU its own way.

Conventions: maps are integer arrays of class ids in [0, c); 255 means ignore. A pixel
that is 255 in either map of a pair is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE = 255


def class_pixels(label_map: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class pixel counts (int64, length c), ignoring 255."""
    flat = np.asarray(label_map).ravel()
    flat = flat[flat != IGNORE]
    return np.bincount(flat.astype(np.int64), minlength=num_classes)[:num_classes].astype(np.int64)


def confusion(a: np.ndarray, b: np.ndarray, num_classes: int) -> np.ndarray:
    """c x c matrix: entry [i, j] counts pixels of class i in `a` and class j in `b`."""
    a = np.asarray(a).ravel().astype(np.int64)
    b = np.asarray(b).ravel().astype(np.int64)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.shape} vs {b.shape}")
    valid = (a != IGNORE) & (b != IGNORE)
    idx = a[valid] * num_classes + b[valid]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def intersection_union(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class intersection and union from a confusion matrix."""
    inter = np.diag(conf).astype(np.int64)
    union = conf.sum(axis=0) + conf.sum(axis=1) - inter
    return inter, union.astype(np.int64)


def discrepancy(intersection: np.ndarray, union: np.ndarray) -> float | None:
    """d = 1 - mean over classes with U_k > 0 of I_k / U_k; None when no pixel is valid."""
    intersection = np.asarray(intersection, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    present = union > 0
    if not present.any():
        return None
    return float(1.0 - np.mean(intersection[present] / union[present]))


def pair_summary(a: np.ndarray, b: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(I, U, d) between two maps of the same size."""
    inter, union = intersection_union(confusion(a, b, num_classes))
    return inter, union, discrepancy(inter, union)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU per class; NaN for classes absent from both prediction and label."""
    inter, union = intersection_union(conf)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def dataset_miou(conf: np.ndarray) -> float:
    """Dataset-level mIoU: one confusion matrix accumulated over all images, nanmean over classes."""
    iou = iou_per_class(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def batch_class_pixels(maps, num_classes: int):
    """Per-image class pixel counts of a batch of same-size maps: torch (N, H, W) -> (N, c)
    int64, ignoring 255; one bincount on the maps' device for the whole batch."""
    import torch  # 6.5 s to import: only scoring, which has it loaded, calls this

    n, k = maps.shape[0], num_classes + 1
    flat = maps.reshape(n, -1).to(torch.int32).clamp_(max=num_classes)  # 255 -> bucket c
    flat.add_((torch.arange(n, device=maps.device, dtype=torch.int32) * k)[:, None])
    return torch.bincount(flat.reshape(-1), minlength=n * k).reshape(n, k)[:, :num_classes]


def batch_joint_counts(a, b, num_classes: int):
    """Per-image joint class histogram of two batches of same-size maps, torch (N, H, W) each:
    (N, c+1, c+1) int64 where [n, i, j] counts pixels of class i in a and j in b, and index c
    holds 255. One bincount for the whole batch; class pixels, intersections and unions are all
    sums of it (joint_class_pixels, joint_pair_summary)."""
    import torch  # 6.5 s to import: only scoring, which has it loaded, calls this

    n, k = a.shape[0], num_classes + 1
    index = a.reshape(n, -1).to(torch.int32).clamp_(max=num_classes).mul_(k)
    index.add_(b.reshape(n, -1).to(torch.int32).clamp_(max=num_classes))
    index.add_((torch.arange(n, device=a.device, dtype=torch.int32) * (k * k))[:, None])
    return torch.bincount(index.reshape(-1), minlength=n * k * k).reshape(n, k, k)


def joint_class_pixels(joint, num_classes: int) -> tuple:
    """(class pixels of a, class pixels of b), (N, c) each, from batch_joint_counts: each map's
    own 255 pixels are ignored, the other map's are not (as class_pixels of each map)."""
    return joint[:, :num_classes, :].sum(dim=2), joint[:, :, :num_classes].sum(dim=1)


def joint_pair_summary(joint, num_classes: int) -> tuple:
    """(I, U) per image, (N, c) each, from batch_joint_counts: pixels that are 255 in either map
    are ignored (as pair_summary)."""
    valid = joint[:, :num_classes, :num_classes]
    inter = valid.diagonal(dim1=1, dim2=2)
    return inter, valid.sum(dim=2) + valid.sum(dim=1) - inter


def batch_pair_summary(a, b, num_classes: int):
    """(I, U) per image between two batches of same-size maps, torch (N, H, W) each:
    (N, c) int64 each; pixels that are 255 in either map are ignored (as pair_summary)."""
    return joint_pair_summary(batch_joint_counts(a, b, num_classes), num_classes)


def batch_discrepancy(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """d per image (rows of I and U): 1 - mean over classes with U_k > 0 of I_k / U_k; NaN
    for an image without a valid pixel."""
    intersection = np.asarray(intersection, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    present = union > 0
    ratio = np.divide(intersection, union, out=np.zeros_like(intersection), where=present)
    counts = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, 1.0 - ratio.sum(axis=1) / counts, np.nan)


def label_ids(logits):
    """Per-pixel argmax over the class dim of (N, C, H, W) logits, as int64 (N, H, W).

    `max(dim=1)`'s indices, not `argmax`: the same first-maximum ids (ties included), and on a
    CPU with bf16 channels_last logits about 1.5x faster (one of the largest costs per image
    after the forward passes at 513x513)."""
    return logits.max(dim=1).indices


def uncertainty_stride(size: int) -> int:
    """The pixel stride of the target's mean entropy and max-softmax for a map of this side:
    every 2nd pixel up to 383, then about 128 samples each way (4 at 513, 8 at 1024). A head's
    logits are upsampled from stride 8 or more, so a subgrid barely moves a mean (the demo's
    trained target at 64x64, 400 wild images, stride 2 against every pixel: at most 0.006
    nats, Spearman 0.9998 between the rankings; `bench.score` prints stride 4 at 513), while
    the softmax pass at 513 costs a quarter of stride 2's."""
    return max(2, size // 128)


def maps_entropy_msp(logits, stride: int = 1, lut=None, num_classes: int | None = None) -> tuple:
    """Label maps, per-image mean pixel entropy (nats) and mean max-softmax probability.

    `logits` is a torch tensor (N, C, H, W), any float dtype; returns maps as a uint8 tensor
    (N, H, W) and two float64 numpy arrays of length N. Uncertainty baselines (entropy, MSP)
    rank by these. The means are taken over every `stride`-th pixel in each direction
    (scoring picks it with `uncertainty_stride`): a segmentation head's logits are bilinearly
    upsampled from stride 8 or more, so a subgrid barely moves a mean. With m the top logit and
    s = sum exp(z - m): msp = 1/s and entropy = log s - sum exp(z - m)(z - m) / s, one max
    and one exp pass instead of a softmax followed by a log and a max.

    With `lut` (a class map's table on the logits' device: model class -> config id or 255)
    the maps are the argmax mapped through it, and entropy and max-softmax are those of the
    model's probabilities summed per config class, with one more bucket for the classes mapped
    to 255 (num_classes + 1 outcomes): the uncertainty of the decision madmine judges. Two
    model classes that both mean "background" (ADE20K's wall and floor) are no doubt about
    the config's classes, and the model's own entropy would count them as one.
    """
    import torch  # 6.5 s to import: only scoring, which has it loaded, calls this

    if lut is not None:
        return _mapped_entropy_msp(logits, stride, lut, num_classes)
    maps = label_ids(logits).to(torch.uint8)  # argmax of bf16 equals that of its exact float copy
    z = logits[:, :, ::stride, ::stride].float()
    if z.data_ptr() == logits.data_ptr():
        z = z.clone()  # shifted in place below: never the caller's tensor
    top = z.amax(dim=1, keepdim=True)
    z.sub_(top)
    e = torch.exp(z)
    s = e.sum(dim=1)
    entropy = torch.log(s) - (e * z).sum(dim=1) / s
    msp = s.reciprocal()
    return (
        maps,
        entropy.mean(dim=(1, 2)).double().cpu().numpy(),
        msp.mean(dim=(1, 2)).double().cpu().numpy(),
    )


def _mapped_entropy_msp(logits, stride: int, lut, num_classes: int) -> tuple:
    import torch

    maps = lut[label_ids(logits)].to(torch.uint8)
    p = torch.softmax(logits[:, :, ::stride, ::stride].float(), dim=1)
    buckets = torch.where(lut == IGNORE, torch.full_like(lut, num_classes), lut)
    merged = torch.zeros((p.shape[0], num_classes + 1, *p.shape[2:]), dtype=p.dtype, device=p.device)
    merged.index_add_(1, buckets, p)
    entropy = -(merged * torch.log(merged.clamp_min(torch.finfo(merged.dtype).tiny))).sum(dim=1)
    msp = merged.amax(dim=1)
    return (
        maps,
        entropy.mean(dim=(1, 2)).double().cpu().numpy(),
        msp.mean(dim=(1, 2)).double().cpu().numpy(),
    )


# ---- evaluation against labels ---------------------------------------------------------
def miou_from_sums(intersection: np.ndarray, union: np.ndarray) -> float:
    """mIoU from per-class I and U summed over images: equal to dataset_miou of the
    accumulated confusion matrix (I and U are additive), so any subset of a test set can be
    scored from its per-image sums."""
    intersection = np.asarray(intersection, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    present = union > 0
    return float(np.mean(intersection[present] / union[present])) if present.any() else float("nan")


def miou_from_sums_rows(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """miou_from_sums for each row of (..., C) arrays at once (bootstrap resamples); NaN where no
    class is present."""
    present = union > 0
    ious = np.where(present, intersection / np.where(present, union, 1), 0.0)
    with np.errstate(invalid="ignore"):
        return ious.sum(-1) / present.sum(-1)


def image_miou(prediction: np.ndarray, label: np.ndarray, num_classes: int) -> float:
    """One image's mIoU (classes in its prediction or label). Averaged over images this is the
    per-image mean mIoU, a different number from the dataset mIoU."""
    inter, union = intersection_union(confusion(label, prediction, num_classes))
    return miou_from_sums(inter, union)


def spearman(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    from scipy.stats import rankdata  # 6 s to import: not for every reader of metrics

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"spearman needs two equal-length sequences of >= 2 values, got {x.shape} and {y.shape}")
    rx, ry = rankdata(x) - (x.size + 1) / 2, rankdata(y) - (y.size + 1) / 2
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


# ---- selection quality: a strategy's score as a failure detector ----------------------
def _detector_inputs(scores, positives) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if scores.shape != positives.shape or scores.ndim != 1:
        raise ValueError(f"scores and positives must be 1-d and equal in length, got {scores.shape} and {positives.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores hold NaN; drop the images a strategy cannot score first")
    return scores, positives


def precision_at_n(scores, positives, n: int) -> float:
    """Fraction of failures among the n highest scores; ties keep the given order (callers
    sort by image_id first, so the result is reproducible)."""
    scores, positives = _detector_inputs(scores, positives)
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    order = np.argsort(-scores, kind="stable")[: min(n, scores.size)]
    return float(positives[order].mean()) if order.size else float("nan")


def auroc(scores, positives) -> float:
    """Probability that a random failure scores above a random non-failure (ties count half):
    the Mann-Whitney U statistic over average ranks. NaN without both kinds."""
    from scipy.stats import rankdata  # 6 s to import: not for every reader of metrics

    scores, positives = _detector_inputs(scores, positives)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores, positives) -> float:
    """Area under the precision-recall curve as a step sum over distinct thresholds:
    sum over thresholds of (recall gained) x (precision at that threshold). Tied scores form
    one threshold, so the result does not depend on their order. NaN without failures."""
    scores, positives = _detector_inputs(scores, positives)
    n_pos = int(positives.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positives[order]
    last_of_tie = np.r_[np.diff(s) != 0, True]
    tp = np.cumsum(p)[last_of_tie]
    seen = (np.arange(s.size) + 1)[last_of_tie]
    recall_gain = np.diff(np.r_[0, tp]) / n_pos
    return float((recall_gain * tp / seen).sum())


# ---- uncertainty ------------------------------------------------------------------------
def paired_bootstrap_miou(inter_a, union_a, inter_b, union_b, resamples: int = 2000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float, float]:
    """Dataset mIoU of A minus B on the same images (per-image I and U, images x classes), with a
    `level` percentile interval from resampling the images, both models on each draw: how much of
    the difference the choice of images alone could make."""
    ia, ua = np.asarray(inter_a, np.float64), np.asarray(union_a, np.float64)
    ib, ub = np.asarray(inter_b, np.float64), np.asarray(union_b, np.float64)
    if ia.shape != ib.shape or ia.shape != ua.shape or ia.shape != ub.shape or ia.ndim != 2 or not len(ia):
        raise ValueError(f"need equal (images, classes) arrays of at least one image, got {ia.shape} and {ib.shape}")
    value = miou_from_sums(ia.sum(0), ua.sum(0)) - miou_from_sums(ib.sum(0), ub.sum(0))
    draws = np.random.default_rng(seed).integers(0, len(ia), (resamples, len(ia)))
    diffs = miou_from_sums_rows(ia[draws].sum(1), ua[draws].sum(1)) - miou_from_sums_rows(ib[draws].sum(1), ub[draws].sum(1))
    tail = 100 * (1 - level) / 2
    return float(value), float(np.nanpercentile(diffs, tail)), float(np.nanpercentile(diffs, 100 - tail))


def sign_test(wins_a: int, wins_b: int) -> float:
    """Two-sided p-value of the per-image wins of A against B under 'either is as likely to win an
    image' (ties left out): the exact binomial test."""
    from scipy.stats import binomtest  # 6 s to import: not for every reader of metrics

    n = int(wins_a) + int(wins_b)
    return float(binomtest(int(wins_a), n, 0.5).pvalue) if n else 1.0


def pearson(x, y) -> float:
    """Pearson's correlation; NaN when either side is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"pearson needs two equal-length sequences of >= 2 values, got {x.shape} and {y.shape}")
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx**2).sum() * (dy**2).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else float("nan")


def fpr_at_tpr(scores, positives, tpr: float = 0.95) -> float:
    """The fraction of non-failures a detector flags at the lowest threshold that catches `tpr` of the
    failures (an image is flagged when its score is at least the threshold; tied scores go together).
    NaN without both kinds."""
    scores, positives = _detector_inputs(scores, positives)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    caught = np.sort(scores[positives])[::-1]
    threshold = caught[int(np.ceil(tpr * n_pos)) - 1]  # the k-th highest failure score, k = ceil(tpr * n_pos)
    return float((scores[~positives] >= threshold).mean())


def bootstrap_interval(statistic, n: int, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """The `level` percentile interval of statistic(indices) over `resamples` draws of n indices with
    replacement (draws whose statistic is NaN are left out; NaN when all are)."""
    draws = np.random.default_rng(seed).integers(0, n, (resamples, n))
    values = np.array([statistic(d) for d in draws], dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


# ---- repair: what fine-tuning fixed and broke, image by image -----------------------------
def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a proportion k / n (95% by default): unlike k/n +- z*se it
    stays within [0, 1] and is not empty at k = 0 or k = n, which is where small sets of
    failures live. (nan, nan) when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"k must be within [0, n], got k={k}, n={n}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


@dataclass(frozen=True)
class Repair:
    """A new version against its parent on the same images: of the parent's failures (per-image
    mIoU below tau) how many it fixed, of the parent's passing images how many it broke, and the
    mean per-image mIoU of both. Images with no labelled pixel (NaN for either) do not count."""

    failures: int  # the parent's failures
    fixed: int  # ... that the new version passes
    passing: int  # the parent's passing images
    broke: int  # ... that the new version fails
    parent_image_miou: float  # mean per-image mIoU over the counted images
    image_miou: float
    tau: float

    @property
    def images(self) -> int:
        return self.failures + self.passing

    @property
    def fixed_interval(self) -> tuple[float, float]:
        return wilson_interval(self.fixed, self.failures)

    @property
    def broke_interval(self) -> tuple[float, float]:
        return wilson_interval(self.broke, self.passing)

    @property
    def failures_after(self) -> int:
        return self.failures - self.fixed + self.broke

    def describe(self) -> str:
        """'fixed 5 of 18 failures (28%; 95% interval 12-51%), broke 1 of 40 passing images (3%; 0-13%);
        per-image mIoU 0.412 -> 0.455'."""

        def part(k: int, n: int, what: str) -> str:
            if n == 0:
                return f"{k} of 0 {what}"
            low, high = wilson_interval(k, n)
            return f"{k} of {n} {what} ({100 * k / n:.0f}%; 95% interval {100 * low:.0f}-{100 * high:.0f}%)"

        return (f"fixed {part(self.fixed, self.failures, 'failures')}, broke {part(self.broke, self.passing, 'passing images')}; "
                f"per-image mIoU {self.parent_image_miou:.3f} -> {self.image_miou:.3f}")


def repair(parent_mious, mious, tau: float) -> Repair:
    """Repair counts from the per-image mIoU of the parent and of the new version on the same images (same order)."""
    before = np.asarray(parent_mious, dtype=np.float64)
    after = np.asarray(mious, dtype=np.float64)
    if before.shape != after.shape or before.ndim != 1:
        raise ValueError(f"per-image mIoU of parent and version must be 1-d and equal in length, got {before.shape} "
                         f"and {after.shape}")
    counted = np.isfinite(before) & np.isfinite(after)
    before, after = before[counted], after[counted]
    failed = before < tau
    return Repair(
        failures=int(failed.sum()),
        fixed=int((failed & (after >= tau)).sum()),
        passing=int((~failed).sum()),
        broke=int((~failed & (after < tau)).sum()),
        parent_image_miou=float(before.mean()) if before.size else float("nan"),
        image_miou=float(after.mean()) if after.size else float("nan"),
        tau=float(tau),
    )
