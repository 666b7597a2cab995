"""Run the scoring stages in this process, batch by batch (tests, debugging, tiny corpora)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from madmine.steps.score.context import ScoreContext
from madmine.steps.score.decode import decode_batch
from madmine.steps.score.predict import Scorer


def decode_kwargs(ctx: ScoreContext) -> dict:
    return {
        "sizes": ctx.input_sizes,
        "storage_options": dict(ctx.storage_options),
        "max_pixels": ctx.scoring.max_pixels,
        "min_side": ctx.scoring.min_side,
        "max_bytes": ctx.scoring.max_bytes,
        "decode_timeout_s": ctx.scoring.decode_timeout_s,
    }


def run_local(rows: pa.Table, ctx: ScoreContext) -> Iterator[dict[str, np.ndarray]]:
    scorer = Scorer(ctx)
    step = ctx.scoring.batch_size
    for start in range(0, rows.num_rows, step):
        chunk = rows.slice(start, step)
        batch = {name: np.asarray(chunk.column(name).to_pylist(), dtype=object) for name in chunk.column_names}
        yield scorer(decode_batch(batch, **decode_kwargs(ctx)))
