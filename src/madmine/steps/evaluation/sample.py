"""A uniform random sample of the corpus, labelled by people, against which every selector is judged
(`madmine evaluate --selectors`).

A test set drawn from M judges models on the images MAD found; it cannot say how well MAD found
them, since it never sees what MAD left out. A selector (d, entropy, the learned predictor, ...)
is judged as a detector of failures over the whole corpus, so its pool must not depend on any
selector: `madmine sample --size N` draws N images of the manifest in a seeded order that depends
only on the seed and each image_id, written to tables/sample/sample.parquet; `madmine annotate
export --set sample` exports them for labelling (blank masks). The size decides the intervals: the
selector table prints them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from madmine import tables
from madmine.errors import EvaluationError
from madmine.steps.context import StepContext


@dataclass(frozen=True)
class SampleParams:
    size: int
    seed: int = 0
    overwrite: bool = False


def draw_key(seed: int, image_id: str) -> str:
    return hashlib.sha256(f"{seed}:sample:{image_id}".encode()).hexdigest()


def run(ctx: StepContext, params: SampleParams) -> pa.Table:
    """Draw the sample and write it; EvaluationError (nothing written) when it exists or cannot be drawn."""
    if params.size < 1:
        raise EvaluationError(f"--size must be >= 1, got {params.size}")
    path = tables.SAMPLE.path(ctx.ws)
    if ctx.ws.exists(path) and not params.overwrite:
        raise EvaluationError(f"a sample exists already ({ctx.ws.url(path)}); its images may be labelled. Pass --force "
                              "to draw another")
    manifest = tables.MANIFEST.read(ctx.ws)
    if manifest is None or manifest.num_rows == 0:
        raise EvaluationError("the manifest is empty: run `madmine ingest SOURCE...` first")
    rows = sorted(zip(manifest.column("image_id").to_pylist(), manifest.column("uri").to_pylist()),
                  key=lambda r: draw_key(params.seed, r[0]))[: params.size]
    now = datetime.now(UTC)
    table = tables.SAMPLE.from_rows([{"image_id": i, "uri": u, "position": k, "seed": params.seed, "created_at": now}
                                     for k, (i, u) in enumerate(rows, start=1)])
    tables.SAMPLE.write(ctx.ws, table)
    return table
