"""How good each selection strategy is at finding failures, where ground truth exists.

Pool: every labelled image that a scoring run predicted (any labelled set: test sets, S,
or a synthetic world labelled in full). A failure is an image on which that run's target
scores a per-image mIoU below tau. Each strategy's score is read as a failure detector:
- mad: the largest d over the competitors (the pairs table);
- entropy: the target's mean pixel entropy; msp: minus its mean max-softmax probability;
- random: a seeded uniform draw per image (the chance line).
Reported per strategy: precision@n (failures among its n top-scored images), AUROC and
AUPR (average precision); the base rate of failures is AUPR's chance level. A pool that
S made is biased towards failures (S holds the lowest MOS): read the numbers with the pool.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from madmine import metrics, tables
from madmine.config import Config
from madmine.errors import EvaluationError
from madmine.images import resize_nearest
from madmine.steps import reads
from madmine.steps.evaluation.predictions import ModelMaps, ModelRef, model_refs
from madmine.steps.score.runs import run_records
from madmine.workspace import Workspace

STRATEGIES = ("mad", "entropy", "msp", "random")


@dataclass(frozen=True)
class StrategyQuality:
    run_id: str
    strategy: str
    pool: int
    failures: int
    tau: float
    n: int
    precision_at_n: float
    auroc: float
    aupr: float
    base_rate: float


def random_score(seed: int, image_id: str) -> float:
    return int(hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()[:13], 16) / 16**13


def _run(ws: Workspace, run_id: str | None) -> dict:
    runs = [r for r in run_records(ws) if r.get("status") == "complete"]
    if run_id:
        runs = [r for r in runs if r["run_id"] == run_id]
    if not runs:
        raise EvaluationError(f"no complete scoring run{' ' + run_id if run_id else ''}; run `madmine score` first")
    return runs[-1]


def strategy_scores(ws: Workspace, run_id: str, seed: int = 0) -> dict[str, dict[str, float]]:
    """strategy -> {image_id: score}, higher = more likely a failure."""
    preds = tables.PREDICTIONS.read(ws, run_id=run_id)
    pairs = tables.PAIRS.read(ws, run_id=run_id)
    out: dict[str, dict[str, float]] = {s: {} for s in STRATEGIES}
    for row in [] if preds is None else preds.to_pylist():
        if row["role"] != "target":
            continue
        out["random"][row["image_id"]] = random_score(seed, row["image_id"])
        if row["mean_entropy"] is not None and np.isfinite(row["mean_entropy"]):
            out["entropy"][row["image_id"]] = float(row["mean_entropy"])
        if row["mean_msp"] is not None and np.isfinite(row["mean_msp"]):
            out["msp"][row["image_id"]] = -float(row["mean_msp"])
    for row in [] if pairs is None else pairs.to_pylist():
        if row["d"] is not None and np.isfinite(row["d"]):
            out["mad"][row["image_id"]] = max(out["mad"].get(row["image_id"], -np.inf), float(row["d"]))
    return out


def selection_quality(
    config: Config, ws: Workspace, *, run_id: str | None = None, tau: float | None = None, n: int | None = None
) -> list[StrategyQuality]:
    """Empty when no labelled image was scored by the run (nothing to measure against)."""
    tau = config.evaluate.tau if tau is None else tau
    n = config.evaluate.top_n if n is None else n
    run = _run(ws, run_id)
    target = next((m for m in run.get("models", []) if m.get("role") == "target"), None)
    if target is None:
        raise EvaluationError(f"scoring run {run['run_id']} records no target")
    scores = strategy_scores(ws, run["run_id"], config.evaluate.seed)
    labelled = reads.labels(ws)
    pool = sorted(i for i in scores["random"] if i in labelled)
    if not pool:
        return []
    refs = {r.key: r for r in model_refs(config, ws)}
    ref = refs.get((target["name"], target["version"])) or ModelRef(target["name"], target["version"], "target", None, "run")
    manifest = reads.uris(ws)
    maps = ModelMaps(config, ws, ref).maps([(i, manifest.get(i, "")) for i in pool])
    failures = {}
    for image_id in pool:
        label = reads.load_label(ws, labelled[image_id], config.num_classes)
        miou = metrics.image_miou(resize_nearest(maps[image_id], label.shape), label, config.num_classes)
        failures[image_id] = bool(np.isfinite(miou) and miou < tau)
    out = []
    for strategy in STRATEGIES:
        ids = [i for i in pool if i in scores[strategy]]
        if not ids:
            continue
        s = np.array([scores[strategy][i] for i in ids])
        y = np.array([failures[i] for i in ids])
        out.append(
            StrategyQuality(
                run_id=run["run_id"],
                strategy=strategy,
                pool=len(ids),
                failures=int(y.sum()),
                tau=tau,
                n=min(n, len(ids)),
                precision_at_n=metrics.precision_at_n(s, y, n),
                auroc=metrics.auroc(s, y),
                aupr=metrics.average_precision(s, y),
                base_rate=float(y.mean()),
            )
        )
    return out


def save(ws: Workspace, rows: list[StrategyQuality]) -> str:
    table = pa.Table.from_pylist([asdict(r) for r in rows], schema=tables.SELECTION_QUALITY.schema)
    return ws.url(tables.SELECTION_QUALITY.write(ws, table))


def load(ws: Workspace) -> pa.Table | None:
    return tables.SELECTION_QUALITY.read(ws)
