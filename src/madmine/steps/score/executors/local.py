"""Score shards in this process, one after the other (tests, debugging, tiny corpora)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from madmine.steps.score.context import ScoreContext
from madmine.steps.score.shard_job import ShardWorker
from madmine.steps.score.shards import ShardSpec


def run_local(specs: list[ShardSpec], ctx: ScoreContext, progress: Callable[[int], None] | None = None) -> Iterator[dict]:
    worker = ShardWorker(ctx)
    for spec in specs:
        yield worker(spec, progress)
