"""One shard, scored and committed by the worker that holds the models.

The worker reads the shard's rows from its manifest part, reads back the maps the store
already holds for it (a competitor's pack when only the target changed: one GET per model),
decodes the images it still needs on a few guarded threads (a few batches ahead of the
forward passes on a GPU; on a CPU, whose cores the models use, when each batch is needed),
runs the `Scorer` batch by batch, and writes the shard's outputs itself: one map pack per
network that ran, the predictions and pairs tables (errors only when there are any), and
last the completion marker. Nothing per image crosses to the driver, which receives one
small summary per shard.

Writing is idempotent (the same shard always gives the same files) and the marker comes
last, so a shard retried after a lost worker, or scored twice by racing workers, is still
visible exactly once.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from madmine import objectstore, tables
from madmine.completion import shard_markers
from madmine.models.device import resolve_prefetch
from madmine.steps.score.context import ScoreContext
from madmine.steps.score.decode import decode_batch
from madmine.steps.score.map_store import MapStore, StoredMap
from madmine.steps.score.outputs import concat, shard_tables
from madmine.steps.score.predict import Scorer
from madmine.steps.score.shards import ShardSpec, read_shard_rows
from madmine.steps.score.timing import Timings
from madmine.untrusted import Limits
from madmine.workspace import Workspace


class ShardWorker:
    """Everything a worker holds across shards: the scorer (models on the device), the
    prefetch thread, the workspace and the map store."""

    def __init__(self, ctx: ScoreContext, node: str = ""):
        self.ctx = ctx
        self.scorer = Scorer(ctx)
        self.ws = Workspace(ctx.workspace_uri, dict(ctx.storage_options))
        self.store = MapStore(self.ws)
        self.ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self.node = node or socket.gethostname()

    def _cached(self, spec: ShardSpec) -> dict[str, dict[str, StoredMap]]:
        """The maps the store holds for this shard, per network model (one read per model)."""
        out = {}
        for model in self.ctx.models:
            if model.is_network and self.ctx.scoring.cache_maps and spec.shard in self.ctx.stored_packs.get(model.name, ()):
                pack = self.store.read_pack(model.name, self.ctx.versions[model.name], spec.shard)
                if pack:
                    out[model.name] = pack
        return out

    def __call__(self, spec: ShardSpec, progress: Callable[[int], None] | None = None) -> dict:
        started, retried = time.perf_counter(), objectstore.retries()
        ctx, timings = self.ctx, Timings()
        with timings("read the shard's manifest rows"):
            rows = read_shard_rows(self.ws, spec)
        ids = np.asarray(rows.column("image_id").to_pylist(), dtype=object)
        uris = np.asarray(rows.column("uri").to_pylist(), dtype=object)
        with timings("read stored maps (packs)"):
            cached = self._cached(spec)
        sizes = tuple(sorted({m.input_size for m in ctx.models if m.is_network and not set(ids) <= set(cached.get(m.name, {}))}))
        step = ctx.scoring.batch_size
        starts = list(range(0, len(ids), step))

        def decoded(start: int) -> dict:
            chunk = {"image_id": ids[start : start + step], "uri": uris[start : start + step],
                     "shard": np.full(min(step, len(ids) - start), spec.shard, dtype=object)}
            if not sizes:  # every network's maps are in the store: nothing to decode
                blank = np.full(len(chunk["image_id"]), "", dtype=object)
                return {**chunk, "error": blank, "stage": blank.copy(), "detail": blank.copy()}
            return decode_batch(chunk, sizes=sizes, storage_options=ctx.storage_options, limits=Limits.of(ctx.scoring),
                                threads=ctx.scoring.decode_threads)

        ahead = resolve_prefetch(ctx.scoring.prefetch_batches, self.scorer.device)  # 0: each batch when needed
        queue: list[Future] = [self.ahead.submit(decoded, s) for s in starts[: ahead + 1]] if ahead else []
        batches, computed = [], {}
        for k in range(len(starts)):
            with timings("wait for decoded images"):
                batch = queue.pop(0).result() if ahead else decoded(starts[k])
            nxt = k + len(queue) + 1
            if ahead and nxt < len(starts):
                queue.append(self.ahead.submit(decoded, starts[nxt]))
            for phase in ("fetch", "decode", "resize"):  # in the decode threads (within the wait when not ahead)
                if f"t_{phase}" in batch:
                    timings.add(f"{phase} (decode threads)", float(np.sum(batch[f"t_{phase}"])))
            scored = self.scorer(batch, cached)
            batches.append(scored.columns)
            for model, maps in scored.computed.items():
                computed.setdefault(model, {}).update(maps)
            if progress is not None:
                progress(len(batch["image_id"]))
        for phase, seconds in self.scorer.timings.take().items():
            timings.add(phase, seconds)
        return self._commit(spec, batches, cached, computed, started, timings, retried)

    def _commit(self, spec: ShardSpec, batches: list[dict], cached: dict, computed: dict, started: float,
                timings: Timings, retried: int) -> dict:
        """Write the shard's packs and tables, then its marker; returns the marker."""
        ctx = self.ctx
        with timings("encode and write map packs"):
            for model, maps in computed.items():  # a pack holds the whole shard: what the store had and what ran
                self.store.write_pack(model, ctx.versions[model], spec.shard, {**cached.get(model, {}), **maps})
        with timings("build and write tables"):
            cols = concat(batches) if batches else None
            predictions, pairs, errors = shard_tables(ctx, cols) if cols is not None else (None, None, None)
            if cols is not None:
                if errors.num_rows:
                    tables.ERRORS.write(self.ws, errors, run_id=ctx.run_id, shard=spec.shard)
                tables.PAIRS.write(self.ws, pairs, run_id=ctx.run_id, shard=spec.shard)
                tables.PREDICTIONS.write(self.ws, predictions, run_id=ctx.run_id, shard=spec.shard)
        seconds = time.perf_counter() - started
        marker = {
            "shard": spec.shard,
            "images": spec.size,
            "errors": 0 if errors is None else errors.num_rows,
            "forwarded": {m.name: len(computed.get(m.name, {})) for m in ctx.models},
            "seconds": round(seconds, 3),
            "timings": timings.take(),
            "node": self.node,
            "pid": os.getpid(),
            "retries": objectstore.retries() - retried,  # object-store requests this shard retried (its marker's PUT aside)
        }
        return shard_markers(self.ws, ctx.run_id).mark_done(spec.shard, marker)
