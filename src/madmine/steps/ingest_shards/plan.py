"""What an ingest reads: the listed URIs that are new, found by a DuckDB join against the
manifest (and earlier ingests' errors), written to the ingest's todo file in shards.

The todo file has one row group per shard, so a worker reads exactly its shard's URIs; the
driver holds only the counts and the shard specs (a few numbers each). The join runs a hash
bucket of URIs at a time (DuckDB's memory limit alone let the driver grow with the listing:
1.76x the RSS from 100k to 1M listed URIs).
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from madmine import duck, tables
from madmine.steps.ingest_shards.area import IngestArea
from madmine.steps.score.shards import ShardSpec

MEMORY_LIMIT = "32MiB"  # the driver's DuckDB: what it holds of the URIs, whatever their number (the rest spills)
BUCKET_ROWS = 200_000  # listed URIs per bucket of the join
URIS = pa.schema([("uri", pa.string())])


@dataclass
class Plan:
    new: int
    known: int
    failed_before: int
    shards: list[ShardSpec]


def shard_name(k: int) -> str:
    return f"{k:05d}"


def _bucket_files(folder: str, bucket: int) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, f"bucket={bucket}", "*.parquet")))


def _view(con, name: str, files: list[str]) -> None:
    """A view of the URIs in `files` (empty without files)."""
    relation = con.read_parquet(files).select("uri") if files else con.from_arrow(URIS.empty_table())
    relation.create_view(name)


def plan(area: IngestArea, listing_file: str, listed: int, *, retry_errors: bool, shard_size: int,
         scratch: str) -> Plan:
    """Classify the listing's URIs, write the new ones to the area's todo file, and cut them in shards.

    The listing, the manifest's URIs and earlier errors' URIs are first split into buckets by a
    hash of the URI (ingest_buckets.sql); each bucket is then joined on its own
    (ingest_plan.sql), so the driver's memory does not grow with the listing or the manifest."""
    ws = area.ws
    con = duck.connect(ws, threads=1, memory_limit=MEMORY_LIMIT, spill_directory=scratch)
    buckets = max(1, math.ceil(listed / BUCKET_ROWS))
    folders = {kind: os.path.join(scratch, kind) for kind in ("listed", "known", "failed")}
    local = os.path.join(scratch, "todo.parquet")
    counts: dict[str, int] = {}
    try:
        if not duck.create_views(con, ws, ("manifest",)):
            duck.register_empty(con, "manifest", tables.MANIFEST.schema)
        _view(con, "ingest_errors", [ws.url(p) for p in tables.ERRORS.files(ws, run_id="ingest")])
        parameters = {"buckets": buckets, "listing_file": listing_file, **{f"{k}_folder": v for k, v in folders.items()}}
        for statement in duck.statements("ingest_buckets"):
            con.execute(statement, {k: v for k, v in parameters.items() if f"${k}" in statement})
        duck.set_variables(con, retry_errors=retry_errors)
        with pq.ParquetWriter(local, URIS, compression="zstd") as writer:
            buffered = URIS.empty_table()
            for bucket in range(buckets):
                for kind, folder in folders.items():
                    _view(con, f"{kind}_uris", _bucket_files(folder, bucket))
                todo = duck.run_file(con, "ingest_plan")
                for batch in todo.to_arrow_reader(shard_size):  # row groups of exactly shard_size rows: one per shard
                    buffered = pa.concat_tables([buffered, pa.Table.from_batches([batch]).cast(URIS)])
                    whole = buffered.num_rows // shard_size * shard_size
                    if whole:
                        writer.write_table(buffered.slice(0, whole), row_group_size=shard_size)
                        buffered = buffered.slice(whole)
                for status, n in con.execute("SELECT status, count(*) FROM classified GROUP BY status").fetchall():
                    counts[status] = counts.get(status, 0) + n
            if buffered.num_rows:
                writer.write_table(buffered, row_group_size=shard_size)
    finally:
        con.close()
    new = counts.get("new", 0)
    shards = []
    if new:
        ws.put_file(area.todo, local)
        shards = [ShardSpec(shard_name(k), area.todo, start, min(start + shard_size, new))
                  for k, start in enumerate(range(0, new, shard_size))]
    return Plan(new=new, known=counts.get("known", 0), failed_before=counts.get("failed_before", 0), shards=shards)


def read_todo(area: IngestArea, spec: ShardSpec) -> list[str]:
    """A shard's URIs: its row group of the todo file (one ranged read)."""
    with area.ws.fs.open(spec.part_path, "rb") as fh:
        todo = pq.ParquetFile(fh)
        k = int(spec.shard)
        if todo.metadata.num_row_groups > k and todo.metadata.row_group(k).num_rows == spec.size:
            return todo.read_row_group(k, columns=["uri"]).column("uri").to_pylist()
        return todo.read(columns=["uri"]).slice(spec.start, spec.size).column("uri").to_pylist()
