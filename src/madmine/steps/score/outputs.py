"""A shard's scored columns -> its predictions, pairs and errors tables, built column-wise
from the numpy arrays (no per-image Python objects), sorted by image_id for reproducibility."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from madmine import tables
from madmine.steps.score.context import ScoreContext, column


def concat(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Columns of several batches as one set of columns, rows sorted by image_id."""
    cols = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.argsort(cols["image_id"].astype(str), kind="stable")
    return {k: v[order] for k, v in cols.items()}


def _lists(matrix: np.ndarray) -> pa.Array:
    """(N, c) int64 -> list<int64> of length c per row, without Python lists."""
    n, c = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * c, c, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix, dtype=np.int64).ravel()))


def _floats(values: np.ndarray) -> pa.Array:
    """NaN (not computed) becomes NULL."""
    values = np.asarray(values, dtype=np.float64)
    return pa.array(values, mask=np.isnan(values))


def shard_tables(ctx: ScoreContext, cols: dict[str, np.ndarray]) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(predictions, pairs, errors) of one shard."""
    failed = cols["error"].astype(str) != ""
    ok = ~failed
    ids = cols["image_id"][ok].astype(str)
    n = len(ids)
    preds = []
    for spec in ctx.models:
        preds.append(
            pa.table(
                {
                    "run_id": pa.array([ctx.run_id] * n, pa.string()),
                    "image_id": pa.array(ids, pa.string()),
                    "model": pa.array([spec.name] * n, pa.string()),
                    "model_version": pa.array([ctx.versions[spec.name]] * n, pa.string()),
                    "role": pa.array([spec.role] * n, pa.string()),
                    "height": pa.array(cols[column("h", spec.name)][ok], pa.int32()),
                    "width": pa.array(cols[column("w", spec.name)][ok], pa.int32()),
                    "class_pixels": _lists(cols[column("cp", spec.name)][ok]),
                    "mean_entropy": _floats(cols[column("ent", spec.name)][ok]),
                    "mean_msp": _floats(cols[column("msp", spec.name)][ok]),
                },
                schema=tables.PREDICTIONS.schema,
            )
        )
    pairs = []
    for spec in ctx.competitors:
        pairs.append(
            pa.table(
                {
                    "run_id": pa.array([ctx.run_id] * n, pa.string()),
                    "image_id": pa.array(ids, pa.string()),
                    "target_version": pa.array([ctx.versions[ctx.target.name]] * n, pa.string()),
                    "competitor": pa.array([spec.name] * n, pa.string()),
                    "competitor_version": pa.array([ctx.versions[spec.name]] * n, pa.string()),
                    "intersection": _lists(cols[column("I", spec.name)][ok]),
                    "union": _lists(cols[column("U", spec.name)][ok]),
                    "d": _floats(cols[column("d", spec.name)][ok]),
                },
                schema=tables.PAIRS.schema,
            )
        )
    errors = pa.table(
        {
            "run_id": pa.array([ctx.run_id] * int(failed.sum()), pa.string()),
            "uri": pa.array(cols["uri"][failed].astype(str), pa.string()),
            "image_id": pa.array(cols["image_id"][failed].astype(str), pa.string()),
            "stage": pa.array(cols["stage"][failed].astype(str), pa.string()),
            "error": pa.array(cols["error"][failed].astype(str), pa.string()),
            "detail": pa.array(cols["detail"][failed].astype(str), pa.string()),
        },
        schema=tables.ERRORS.schema,
    )
    empty_pairs = tables.PAIRS.empty()
    return pa.concat_tables(preds), pa.concat_tables(pairs) if pairs else empty_pairs, errors
