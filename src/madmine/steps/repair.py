"""Repair as people ask for it: for a new version against its parent, on the same images, "fixed x of
y failures, broke z of w passing images", with intervals and the mean per-image mIoU beside them.

Fine-tuning writes the sets it measured when it made the version (V, the S it trained on, T(0):
tables/repair/finetune-<model>-round-<R>-<strategy>.parquet); evaluation writes every version
against its parent on every labelled test set (tables/repair/evaluation.parquet, replaced on each
run). The counts come from madmine.metrics.repair.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from madmine import metrics, names, tables
from madmine.workspace import Workspace

FINETUNE, EVALUATE = "finetune", "evaluate"
EVALUATION_PART = "evaluation"  # evaluation's part of the table, replaced on every run
SET_NAMES = {"t0": "T(0)", "v": "V", "s": "S"}  # fine-tuning's sets, by their names in its per-image figures


def row(version: dict, set_name: str, counts: metrics.Repair, source: str, testset_round: int | None = None) -> dict:
    """One row of the repair table; `version` names model, model_version, parent_version, selection, round."""
    fixed_low, fixed_high = counts.fixed_interval
    broke_low, broke_high = counts.broke_interval
    return {
        "model": version["model"], "model_version": version["model_version"],
        "parent_version": version["parent_version"], "selection": version.get("selection"),
        "model_round": version.get("round"), "set": set_name, "testset_round": testset_round,
        "images": counts.images, "failures": counts.failures, "fixed": counts.fixed,
        "fixed_low": fixed_low, "fixed_high": fixed_high, "passing": counts.passing, "broke": counts.broke,
        "broke_low": broke_low, "broke_high": broke_high, "parent_image_miou": counts.parent_image_miou,
        "image_miou": counts.image_miou, "tau": counts.tau, "source": source, "created_at": datetime.now(UTC),
    }


def finetune_rows(version: dict, images: dict, tau: float) -> list[dict]:
    """Rows for the sets fine-tuning measured: images = {"parent": {set: per-image mIoU}, "best": {...}}."""
    parent, best = images.get("parent") or {}, images.get("best") or {}
    out = []
    for key, set_name in SET_NAMES.items():
        if key in parent and key in best and len(parent[key]) == len(best[key]):
            counts = metrics.repair(parent[key], best[key], tau)
            out.append(row(version, set_name, counts, FINETUNE, names.HELD_OUT if key == "t0" else None))
    return out


def from_image_rows(image_rows: list[dict], versions: list[dict], tau: float) -> list[dict]:
    """Every version against its parent on every test set where both were measured, from evaluation's
    per-image rows (model, model_version, testset_round, image_id, image_miou); `versions` are rows of the
    models table (model, model_version, parent_version, selection, round)."""
    by: dict[tuple[str, str, int], dict[str, float]] = {}
    for r in image_rows:
        value = r.get("image_miou")
        by.setdefault((r["model"], r["model_version"], r["testset_round"]), {})[r["image_id"]] = (
            float("nan") if value is None else float(value))
    rounds = sorted({k[2] for k in by})
    out = []
    for version in versions:
        for testset_round in rounds:
            mine = by.get((version["model"], version["model_version"], testset_round))
            theirs = by.get((version["model"], version["parent_version"], testset_round))
            if not mine or not theirs:
                continue
            shared = sorted(set(mine) & set(theirs))
            counts = metrics.repair(np.array([theirs[i] for i in shared]), np.array([mine[i] for i in shared]), tau)
            out.append(row(version, names.testset_name(testset_round), counts, EVALUATE, testset_round))
    return out


def write(ws: Workspace, rows: list[dict], part: str) -> str:
    return tables.REPAIR.write(ws, pa.Table.from_pylist(rows, schema=tables.REPAIR.schema), part=part)


def finetune_part(model: str, round_: int, selection: str) -> str:
    return f"{FINETUNE}-{model}-round-{round_}-{selection}"


def share(k: int, n: int, low: float, high: float) -> str:
    """'5 of 18 (28%; 12-51%)': a count, its share and its 95% interval, as tables show them."""
    if not n:
        return f"{k} of 0"
    return f"{k} of {n} ({100 * k / n:.0f}%; {100 * low:.0f}-{100 * high:.0f}%)"


def cells(r: dict) -> tuple[str, str, str]:
    """(fixed, broke, per-image mIoU) of a repair row for a table."""
    return (share(r["fixed"], r["failures"], r["fixed_low"], r["fixed_high"]),
            share(r["broke"], r["passing"], r["broke_low"], r["broke_high"]),
            f"{r['parent_image_miou']:.3f} -> {r['image_miou']:.3f}")


def describe(r: dict) -> str:
    """One line of a repair row: 'T(0): fixed 3 of 12 failures (25%; 95% interval 9-53%), broke ...'."""
    counts = metrics.Repair(r["failures"], r["fixed"], r["passing"], r["broke"], r["parent_image_miou"],
                            r["image_miou"], r["tau"])
    return f"{r['set']}: {counts.describe()}"
