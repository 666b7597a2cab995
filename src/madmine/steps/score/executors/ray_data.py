"""Run the scoring stages as a Ray Data pipeline.

decode (stateless CPU tasks) -> one actor pool whose actors hold every model on their
device -> the driver, streaming. Actors that die are restarted and their batches retried,
so a lost worker costs time, never images.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy, DataContext

from madmine.ray_cluster import ensure_ray
from madmine.steps.score.context import ScoreContext
from madmine.steps.score.decode import decode_batch
from madmine.steps.score.executors.local import decode_kwargs
from madmine.steps.score.predict import Scorer


def decode_memory_bytes(ctx: ScoreContext) -> int:
    per_image = sum(size * size * 3 for size in ctx.input_sizes) + 4 * 2**20
    return 192 * 2**20 + 3 * ctx.scoring.decode_batch_size * per_image


class _ScorerActor:
    """Ray Data callable class: one Scorer per actor, built once."""

    def __init__(self, ctx: ScoreContext):
        self.scorer = Scorer(ctx)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.scorer(batch)


def run_ray(rows: pa.Table, ctx: ScoreContext, address: str | None = None) -> Iterator[dict[str, np.ndarray]]:
    ensure_ray(address)
    data_ctx = DataContext.get_current()
    data_ctx.enable_progress_bars = False
    data_ctx.print_on_execution_start = False
    s = ctx.scoring
    # Small input blocks: results reach the driver (and shards commit) a few batches at a
    # time, instead of once per large block; not so small that a million-image corpus
    # becomes millions of objects.
    step = max(s.decode_batch_size, min(s.shard_size, 4 * s.decode_batch_size))
    blocks = [rows.slice(i, step) for i in range(0, rows.num_rows, step)]
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs=decode_kwargs(ctx),
        batch_size=s.decode_batch_size,
        batch_format="numpy",
        num_cpus=1,
        # A memory request (what a decode batch needs) also makes the decode tasks' remote
        # arguments differ from the actors', so Ray Data never fuses decoding into the
        # scoring actors: decoding overlaps with inference instead of stalling it.
        memory=decode_memory_bytes(ctx),
    )
    ds = ds.map_batches(
        _ScorerActor,
        fn_constructor_kwargs={"ctx": ctx},
        compute=ActorPoolStrategy(size=s.actors),
        batch_size=s.batch_size,
        batch_format="numpy",
        num_cpus=s.num_cpus_per_actor,
        num_gpus=s.num_gpus_per_actor,
    )  # Ray Data restarts dead pool actors and retries their batches (max_restarts=-1 by default)
    yield from ds.iter_batches(batch_format="numpy", batch_size=None, prefetch_batches=1)
