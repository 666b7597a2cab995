"""THE metrics of madmine. Selection, evaluation and reports import these; nothing else
computes IoU its own way.

Conventions: maps are integer arrays of class ids in [0, c); 255 means ignore. A pixel
that is 255 in either map of a pair is ignored.
"""

from __future__ import annotations

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


def mean_entropy_and_msp(probs) -> tuple:
    """Per-image mean pixel entropy (nats) and mean max-softmax probability.

    `probs` is a torch tensor (N, C, H, W) of softmax probabilities; returns two float64
    numpy arrays of length N. Uncertainty baselines (entropy, MSP) rank by these.
    """
    import torch

    p = probs.float()
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=1)
    msp = p.max(dim=1).values
    return (
        entropy.mean(dim=(1, 2)).double().cpu().numpy(),
        msp.mean(dim=(1, 2)).double().cpu().numpy(),
    )
