"""Score shards on a Ray cluster: one Ray Data pool of actors that each hold every model.

The dataset is the list of pending shards (one small row each: the driver never holds the
manifest); each actor scores and commits a whole shard and returns its summary. Ray Data
restarts an actor that dies (a lost node, an out-of-memory kill) and retries its shard on a
live one; a shard's outputs are idempotent and committed by a marker written last, so every
image is counted exactly once. The pool grows up to `[scoring] actors` as nodes join.

Progress is finer than shards: actors add the images of each batch to a small counter actor
(fire and forget), which the driver reads twice a second. The counter lives on the driver's
node, and only the progress bar depends on it: a lost counter never fails a run.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import ray
from ray.data import ActorPoolStrategy, DataContext
from ray.exceptions import GetTimeoutError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from madmine.ray_cluster import ensure_ray, quiet_logs
from madmine.steps.score.context import ScoreContext
from madmine.steps.score.shard_job import ShardWorker
from madmine.steps.score.shards import ShardSpec

quiet_logs()  # importing Ray Data or Tune re-applied their INFO logging


@ray.remote(num_cpus=0)
class ProgressCounter:
    """Images scored since the driver last looked."""

    def __init__(self):
        self.pending = 0

    def add(self, n: int) -> None:
        self.pending += n

    def take(self) -> int:
        n, self.pending = self.pending, 0
        return n


class ShardActor:
    """Ray Data callable class: one ShardWorker per actor, built once; one shard per call."""

    def __init__(self, ctx: ScoreContext, counter):
        self.worker = ShardWorker(ctx, node=ray.get_runtime_context().get_node_id())
        self.counter = counter

    def __call__(self, batch: dict) -> dict:
        summaries = []
        for row in zip(*(batch[k] for k in ("shard", "part_path", "start", "stop"))):
            spec = ShardSpec(str(row[0]), str(row[1]), int(row[2]), int(row[3]))
            summary = self.worker(spec, progress=lambda n: self.counter.add.remote(n))
            summaries.append(json.dumps(summary))
        return {"summary": summaries}


def run_ray(specs: list[ShardSpec], ctx: ScoreContext, address: str | None = None,
            progress: Callable[[int], None] | None = None) -> Iterator[dict]:
    ensure_ray(address)
    data_ctx = DataContext.get_current()
    data_ctx.enable_progress_bars = False
    data_ctx.print_on_execution_start = False
    s = ctx.scoring
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    counter = ProgressCounter.options(scheduling_strategy=here).remote()
    ds = ray.data.from_items([spec.to_dict() for spec in specs], override_num_blocks=len(specs))
    ds = ds.map_batches(
        ShardActor,
        fn_constructor_kwargs={"ctx": ctx, "counter": counter},
        compute=ActorPoolStrategy(min_size=1, max_size=s.actors),
        batch_size=1,
        batch_format="numpy",
        num_cpus=s.num_cpus_per_actor,
        num_gpus=s.num_gpus_per_actor,
    )  # Ray Data restarts dead pool actors and retries their shards
    stop = threading.Event()

    def take() -> int:
        try:
            return ray.get(counter.take.remote(), timeout=10)
        except (RayError, GetTimeoutError):
            return 0  # the bar falls behind; the shard summaries still count every image

    def report() -> None:
        while not stop.wait(0.5):
            n = take()
            if n and progress is not None:
                progress(n)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        for row in ds.iter_rows():
            yield json.loads(row["summary"])
    finally:
        stop.set()
        reporter.join(timeout=5)
        left = take()
        if left and progress is not None:
            progress(left)
        try:
            ray.kill(counter)
        except RayError:
            pass
