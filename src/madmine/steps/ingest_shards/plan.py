"""What an ingest reads: the listed URIs that are new, found by a DuckDB join against the
manifest (and earlier ingests' errors), written to the ingest's todo file in shards.

The todo file has one row group per shard, so a worker reads exactly its shard's URIs; the
driver holds only the counts and the shard specs (a few numbers each).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from madmine import duck, tables
from madmine.steps.ingest_shards.area import IngestArea
from madmine.steps.score.shards import ShardSpec

MEMORY_LIMIT = "256MiB"  # the driver's DuckDB: past it, the listing and the manifest's URIs spill to disk
SCHEMA = pa.schema([("uri", pa.string())])
ERRORS_SCHEMA = pa.schema([("uri", pa.string())])


@dataclass
class Plan:
    new: int
    known: int
    failed_before: int
    shards: list[ShardSpec]


def shard_name(k: int) -> str:
    return f"{k:05d}"


def plan(area: IngestArea, listing_file: str, *, retry_errors: bool, shard_size: int, scratch: str) -> Plan:
    """Classify the listing's URIs, write the new ones to the area's todo file, and cut them in shards."""
    ws = area.ws
    con = duck.connect(ws, threads=2, memory_limit=MEMORY_LIMIT, spill_directory=scratch)
    try:
        if not duck.create_views(con, ws, ("manifest",)):
            duck.register_empty(con, "manifest", tables.MANIFEST.schema)
        error_files = tables.ERRORS.files(ws, run_id="ingest")
        if error_files:
            con.read_parquet([ws.url(p) for p in error_files]).select("uri").create_view("ingest_errors")
        else:
            duck.register_empty(con, "ingest_errors", ERRORS_SCHEMA)
        duck.set_variables(con, listing_file=listing_file, retry_errors=retry_errors)
        todo = duck.run_file(con, "ingest_plan")
        local = os.path.join(scratch, "todo.parquet")
        new = 0
        with pq.ParquetWriter(local, SCHEMA, compression="zstd") as writer:
            buffered = SCHEMA.empty_table()
            for batch in todo.to_arrow_reader(shard_size):  # row groups of exactly shard_size rows: one per shard
                buffered = pa.concat_tables([buffered, pa.Table.from_batches([batch]).cast(SCHEMA)])
                whole = buffered.num_rows // shard_size * shard_size
                if whole:
                    writer.write_table(buffered.slice(0, whole), row_group_size=shard_size)
                    buffered, new = buffered.slice(whole), new + whole
            if buffered.num_rows:
                writer.write_table(buffered, row_group_size=shard_size)
                new += buffered.num_rows
        counts = dict(con.execute("SELECT status, count(*) FROM listed_uris GROUP BY status").fetchall())
    finally:
        con.close()
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
