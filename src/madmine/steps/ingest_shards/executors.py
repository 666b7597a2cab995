"""Ingest shards on this machine (every one-machine run: an embedded Ray would only add its
start-up). Ray's executor is ray_data.py.

Decoding small images is mostly Python under the GIL: two threads of one process read
96x96 JPEGs slower than one (750 against 400 us an image on 2 cores), so several shards run
at once in as many processes, one a core, each shard on its own thread(s). One shard, or one
process, runs here without starting any.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from madmine import objectstore
from madmine.errors import MadmineError
from madmine.steps.ingest_shards.worker import IngestContext, IngestWorker
from madmine.steps.score.shards import ShardSpec

_worker: IngestWorker | None = None  # one per pool process


def _start(ctx: IngestContext) -> None:
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to report, once
    _worker = IngestWorker(ctx)


def _ingest_shard(spec: ShardSpec) -> dict:
    try:
        return _worker(spec)
    except Exception as exc:
        # an object store that kept failing crosses back as the one-line error the driver
        # prints; the library's exception would lose its cause on the way
        down = objectstore.unavailable(exc)
        if down is None:
            raise
        raise down from None


def run_local(specs: list[ShardSpec], ctx: IngestContext, processes: int = 1) -> Iterator[dict]:
    """Each shard's summary as it finishes. A pool process that dies (killed, out of memory)
    stops the ingest: nothing unfinished is promoted, and a re-run reads every shard again."""
    if processes <= 1 or len(specs) <= 1:
        worker = IngestWorker(ctx)
        for spec in specs:
            yield worker(spec)
        return
    # spawn, not fork: the driver holds DuckDB's and the object store's threads
    pool = ProcessPoolExecutor(min(processes, len(specs)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start, initargs=(ctx,))
    try:
        futures = [pool.submit(_ingest_shard, spec) for spec in specs]
        for future in as_completed(futures):
            try:
                summary = future.result()
            except BrokenProcessPool as exc:
                raise MadmineError(
                    f"ingest: a shard process died ({exc.__cause__ or 'killed, or out of memory?'}); nothing of "
                    "this ingest entered the manifest: re-run the same `madmine ingest`"
                ) from exc
            yield summary
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
