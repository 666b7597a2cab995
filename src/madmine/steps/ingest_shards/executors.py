"""Ingest shards in this process, one after another, each on a few threads (every one-machine
run: an embedded Ray would only add its start-up). Ray's executor is ray_data.py."""

from __future__ import annotations

from collections.abc import Iterator

from madmine.steps.ingest_shards.worker import IngestContext, IngestWorker
from madmine.steps.score.shards import ShardSpec


def run_local(specs: list[ShardSpec], ctx: IngestContext) -> Iterator[dict]:
    worker = IngestWorker(ctx)
    for spec in specs:
        yield worker(spec)
