"""Ingest shards on a Ray cluster: a Ray Data pool of actors, one shard per call, on whatever
nodes the cluster has; the driver receives one summary per shard.

Ray Data restarts an actor that dies (a lost node, an out-of-memory kill) and retries its
shard on a live one; the shard's files are named after it and its marker comes last, so a
retried shard is counted once and nothing it read is lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import ray
from ray.data import ActorPoolStrategy, DataContext

from madmine.ray_cluster import ensure_ray, quiet_logs
from madmine.steps.ingest_shards.worker import IngestContext, IngestWorker
from madmine.steps.score.shards import ShardSpec

quiet_logs()  # importing Ray Data re-applied its INFO logging


class IngestActor:
    """Ray Data callable class: one IngestWorker per actor; one shard per call."""

    def __init__(self, ctx: IngestContext):
        self.worker = IngestWorker(ctx, node=ray.get_runtime_context().get_node_id())

    def __call__(self, batch: dict) -> dict:
        summaries = []
        for row in zip(*(batch[k] for k in ("shard", "part_path", "start", "stop"))):
            summaries.append(json.dumps(self.worker(ShardSpec(str(row[0]), str(row[1]), int(row[2]), int(row[3])))))
        return {"summary": summaries}


def run_ray(specs: list[ShardSpec], ctx: IngestContext, address: str | None, actors: int,
            cpus_per_actor: float = 1.0) -> Iterator[dict]:
    """The shards as a dataset mapped by up to `actors` actors; summaries as shards finish."""
    ensure_ray(address)
    data_ctx = DataContext.get_current()
    data_ctx.enable_progress_bars = False
    data_ctx.print_on_execution_start = False
    ds = ray.data.from_items([spec.to_dict() for spec in specs], override_num_blocks=len(specs))
    ds = ds.map_batches(
        IngestActor,
        fn_constructor_kwargs={"ctx": ctx},
        compute=ActorPoolStrategy(min_size=1, max_size=max(1, actors)),
        batch_size=1,
        batch_format="numpy",
        num_cpus=cpus_per_actor,
    )  # Ray Data restarts dead pool actors and retries their shards
    for row in ds.iter_rows():
        yield json.loads(row["summary"])
