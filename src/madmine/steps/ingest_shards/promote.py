"""Promotion: the workers' staged parts become manifest parts, once duplicates across shards
and against the manifest are settled by one DuckDB query over the parts' (image_id, uri).

A staged part with nothing to drop is renamed (on an object store: copied server-side, an
atomic write of the destination); one with drops is rewritten without them. Each manifest
part appears whole; a driver killed half-way leaves whole parts, and the next ingest finds the
rest of the URIs new again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from madmine import duck, tables
from madmine.steps.ingest_shards.area import IngestArea
from madmine.steps.ingest_shards.plan import MEMORY_LIMIT
from madmine.steps.ingest_shards.worker import MANIFEST_ROW_GROUP


@dataclass
class Promoted:
    added: int = 0
    duplicates: int = 0  # staged rows dropped: already in the manifest, or staged by another shard too
    parts: list[str] = field(default_factory=list)


def duplicate_rows(area: IngestArea, shards: list[str], scratch: str) -> dict[str, set[str]]:
    """{shard: image_ids to drop from its staged part}."""
    ws = area.ws
    con = duck.connect(ws, threads=1, memory_limit=MEMORY_LIMIT, spill_directory=scratch)
    try:
        if not duck.create_views(con, ws, ("manifest",)):
            duck.register_empty(con, "manifest", tables.MANIFEST.schema)
        duck.set_variables(con, staged_files=[ws.url(area.staged(s)) for s in shards])
        drops: dict[str, set[str]] = {}
        for shard, image_id in duck.run_file(con, "ingest_duplicates").fetchall():
            drops.setdefault(shard, set()).add(image_id)
        return drops
    finally:
        con.close()


def promote(area: IngestArea, rows: dict[str, int], scratch: str) -> Promoted:
    """Move the staged parts of the shards in `rows` ({shard: staged rows}) into the manifest."""
    ws, out = area.ws, Promoted()
    staged = sorted(s for s, n in rows.items() if n)
    drops = duplicate_rows(area, staged, scratch) if staged else {}
    for shard in staged:
        part = area.part(shard)
        dropped = drops.get(shard, set())
        if not dropped:
            ws.move(area.staged(shard), tables.MANIFEST.path(ws, part=part))
        else:
            table = ws.read_parquet([area.staged(shard)])
            keep = table.filter(pc.invert(pc.is_in(table.column("image_id"), value_set=pa.array(sorted(dropped), pa.string()))))
            if keep.num_rows:
                tables.MANIFEST.write(ws, keep, metadata={tables.SORTED_BY: b"image_id"},
                                      row_group_size=MANIFEST_ROW_GROUP, part=part)
            ws.remove(area.staged(shard))
        out.duplicates += len(dropped)
        out.added += rows[shard] - len(dropped)
        if rows[shard] > len(dropped):
            out.parts.append(part)
    return out
