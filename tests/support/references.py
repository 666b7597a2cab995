"""Independent computations the tests compare madmine's numbers with: explicit loops over
pixels, pairs and thresholds, written from the definitions, sharing no code with madmine."""

from __future__ import annotations

import math

import numpy as np

import evaluate_world as world

C = len(world.CLASSES)


def reference_d(a: np.ndarray, b: np.ndarray, c: int):
    valid = (a != 255) & (b != 255)
    ratios = []
    for k in range(c):
        inter = np.sum((a == k) & (b == k) & valid)
        union = np.sum(((a == k) | (b == k)) & valid)
        if union > 0:
            ratios.append(inter / union)
    return None if not ratios else 1.0 - float(np.mean(ratios))


def brute_auroc(scores, positives) -> float:
    """Every (failure, non-failure) pair: 1 when the failure scores higher, 1/2 on a tie."""
    pos = [s for s, p in zip(scores, positives) if p]
    neg = [s for s, p in zip(scores, positives) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def brute_ap(scores, positives) -> float:
    """Average precision by its definition: for each distinct threshold t (high to low),
    recall gained at t times the precision of {score >= t}."""
    total = sum(positives)
    ap, recall_before = 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        chosen = [p for s, p in zip(scores, positives) if s >= t]
        recall = sum(chosen) / total
        ap += (recall - recall_before) * (sum(chosen) / len(chosen))
        recall_before = recall
    return ap


def reference(maps: dict, labels: dict, ids: list[str]) -> tuple[float, list[float], float]:
    """(dataset mIoU, IoU per class (NaN when absent), per-image mean mIoU) by explicit loops."""
    total = np.zeros((C, C), dtype=np.int64)
    per_image = []
    for image_id in ids:
        label = labels[image_id]
        pred = world.nearest(maps[image_id], label.shape)
        conf = np.zeros((C, C), dtype=np.int64)
        for y in range(label.shape[0]):
            for x in range(label.shape[1]):
                a, b = int(label[y, x]), int(pred[y, x])
                if a == 255 or b == 255:
                    continue
                conf[a, b] += 1
        total += conf
        ious = []
        for k in range(C):
            union = conf[k, :].sum() + conf[:, k].sum() - conf[k, k]
            if union > 0:
                ious.append(conf[k, k] / union)
        per_image.append(sum(ious) / len(ious))
    iou = []
    for k in range(C):
        union = total[k, :].sum() + total[:, k].sum() - total[k, k]
        iou.append(total[k, k] / union if union > 0 else math.nan)
    present = [v for v in iou if not math.isnan(v)]
    return sum(present) / len(present), iou, sum(per_image) / len(per_image)
