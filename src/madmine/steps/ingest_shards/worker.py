"""One ingest shard, read and committed by a worker: the shard's URIs from the todo file, then
each file read, hashed (image_id = sha256 of the bytes), probed and perceptually hashed on a
few guarded threads of the untrusted-bytes boundary, then the shard's files written by the
worker itself: its manifest rows (sorted by image_id, duplicates within the shard collapsed),
its error rows (only if any), and last its marker, which is the summary the driver receives.

Every file is named after the shard and written whole, so a shard retried after a lost worker
writes the same files again and is counted once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import time
from dataclasses import dataclass

import pyarrow as pa

from madmine import objectstore, tables
from madmine.images import ImageError, perceptual_hash, probe
from madmine.steps.ingest_shards.area import IngestArea
from madmine.steps.ingest_shards.plan import read_todo
from madmine.steps.score.shards import ShardSpec
from madmine.untrusted import guarded_map, read_bytes
from madmine.workspace import Workspace

MANIFEST_ROW_GROUP = 1024  # a scoring worker reads only its shard's row groups
ERRORS_IN_SUMMARY = 50  # error rows a shard's summary carries to the driver (the errors table holds them all)


@dataclass(frozen=True)
class IngestContext:
    """What an ingest worker needs, picklable so that it travels to remote actors."""

    ingest_id: str
    workspace_uri: str
    workspace_options: dict  # the workspace's storage options
    storage_options: dict  # the sources'
    ingested_at: str  # ISO time of the ingest: every row of it carries the same
    max_pixels: int
    min_side: int
    max_bytes: int
    decode_timeout_s: float | None
    threads: int


def image_id_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def error_row(uri: str, image_id: str | None, reason: str, detail: str) -> dict:
    return {"run_id": "ingest", "uri": uri, "image_id": image_id, "stage": "ingest", "error": reason, "detail": detail}


def describe(uri: str, ctx: IngestContext) -> dict:
    """One file -> its manifest row, or its error row (naming the image_id once the bytes were read).
    Runs inside guarded_map, which holds the time limit; an unreadable file raises ImageError."""
    data = read_bytes(uri, ctx.storage_options, max_bytes=ctx.max_bytes)
    image_id = image_id_of(data)
    try:
        small, width, height = probe(data, max_pixels=ctx.max_pixels, min_side=ctx.min_side, timeout_s=None)
    except ImageError as exc:
        return {"error": error_row(uri, image_id, exc.reason, exc.detail)}
    try:
        phash = perceptual_hash(small)
    except Exception as exc:  # noqa: BLE001 - one file never stops an ingest
        return {"error": error_row(uri, image_id, "ingest failed", f"{type(exc).__name__}: {exc}"[:500])}
    return {"row": {"image_id": image_id, "uri": uri, "bytes": len(data), "width": width, "height": height, "phash": phash}}


class IngestWorker:
    """Reads, hashes, probes and commits whole shards; one per process or actor."""

    def __init__(self, ctx: IngestContext, node: str = ""):
        self.ctx = ctx
        self.area = IngestArea(Workspace(ctx.workspace_uri, dict(ctx.workspace_options)), ctx.ingest_id)
        self.node = node or socket.gethostname()

    def __call__(self, spec: ShardSpec) -> dict:
        started, retried = time.perf_counter(), objectstore.retries()
        ctx, area = self.ctx, self.area
        uris = read_todo(area, spec)
        read = time.perf_counter()
        outcomes = guarded_map(lambda uri: describe(uri, ctx), uris, threads=ctx.threads, timeout_s=ctx.decode_timeout_s)
        described = time.perf_counter()
        rows, errors = {}, []
        duplicates = 0
        for uri, outcome in zip(uris, outcomes):
            if isinstance(outcome, ImageError):
                errors.append(error_row(uri, None, outcome.reason, outcome.detail))
            elif "error" in outcome:
                errors.append(outcome["error"])
            else:
                row = outcome["row"]
                kept = rows.get(row["image_id"])
                if kept is not None:  # the same bytes twice in the shard: the smaller URI stays
                    duplicates += 1
                    if row["uri"] >= kept["uri"]:
                        continue
                rows[row["image_id"]] = row
        stamp = dt.datetime.fromisoformat(ctx.ingested_at)
        ordered = [{**rows[k], "ingested_at": stamp} for k in sorted(rows)]
        if ordered:
            table = tables.MANIFEST.from_rows(ordered).replace_schema_metadata({tables.SORTED_BY: b"image_id"})
            area.ws.write_parquet(area.staged(spec.shard), table, row_group_size=MANIFEST_ROW_GROUP)
        if errors:
            tables.ERRORS.write(area.ws, pa.Table.from_pylist(errors, schema=tables.ERRORS.schema), run_id="ingest",
                                shard=area.errors_key(spec.shard))
        summary = {
            "shard": spec.shard,
            "listed": len(uris),
            "rows": len(ordered),
            "duplicates": duplicates,
            "errors": len(errors),
            "error_rows": errors[:ERRORS_IN_SUMMARY],
            "seconds": round(time.perf_counter() - started, 3),
            "timings": {"read the shard's URIs": round(read - started, 3),
                        "read, hash, probe and phash": round(described - read, 3),
                        "write the shard's files": round(time.perf_counter() - described, 3)},
            "node": self.node,
            "pid": os.getpid(),
            "retries": objectstore.retries() - retried,
        }
        return area.markers.mark_done(spec.shard, summary)
