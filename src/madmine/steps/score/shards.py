"""Shards: the unit of scoring work, of storage and of completion.

A shard is a slice of one manifest part: the part's rows in image_id order, `shard_size` at
a time, named `<part>-<k>` (k zero-padded). Parts are immutable, so shards are stable as the
corpus grows, and a shard's images are known without reading any other part.

The driver plans shards from the parts' footers alone (their row counts): it never holds the
manifest. The worker that scores a shard reads its rows itself, and only the row groups
that hold them (ingest writes sorted parts with small row groups and says so in the file).
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from madmine import tables
from madmine.workspace import Workspace

SORTED_KEY = tables.SORTED_BY  # set by ingest: the part's rows are in image_id order


@dataclass(frozen=True)
class ShardSpec:
    """What a worker needs to find a shard's images: the part, and the slice of its rows."""

    shard: str
    part_path: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> ShardSpec:
        return cls(str(row["shard"]), str(row["part_path"]), int(row["start"]), int(row["stop"]))


def shard_name(part: str, k: int) -> str:
    return f"{part}-{k:05d}"


def part_name(path: str) -> str:
    return posixpath.basename(path)[: -len(".parquet")]


def plan_shards(ws: Workspace, shard_size: int) -> list[ShardSpec]:
    """Every shard of the manifest, from the parts' footers (row counts) only."""
    specs = []
    for path in tables.MANIFEST.files(ws):
        with ws.fs.open(path, "rb") as fh:
            rows = pq.ParquetFile(fh).metadata.num_rows
        part = part_name(path)
        for k, start in enumerate(range(0, rows, shard_size)):
            specs.append(ShardSpec(shard_name(part, k), path, start, min(start + shard_size, rows)))
    return specs


def read_shard_rows(ws: Workspace, spec: ShardSpec) -> pa.Table:
    """(image_id, uri) of a shard's images, in image_id order."""
    with ws.fs.open(spec.part_path, "rb") as fh:
        part = pq.ParquetFile(fh)
        meta = part.metadata
        sorted_part = (part.schema_arrow.metadata or {}).get(SORTED_KEY) == b"image_id"
        if not sorted_part:  # a part not written by ingest: sort it whole
            table = part.read(columns=["image_id", "uri"]).sort_by("image_id")
            return table.slice(spec.start, spec.size)
        groups, first, offset = [], None, 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if offset + n > spec.start and offset < spec.stop:
                groups.append(g)
                first = offset if first is None else first
            offset += n
        table = part.read_row_groups(groups, columns=["image_id", "uri"])
    return table.slice(spec.start - first, spec.size)


def shards_of(ws: Workspace, image_ids, shard_size: int) -> dict[str, str]:
    """{image_id: shard} under `shard_size`, for readers that know images but not shards:
    reads each part's image_id column (sorted), never the uris."""
    wanted = np.asarray(sorted(set(image_ids)), dtype=object)
    out: dict[str, str] = {}
    if not len(wanted):
        return out
    for path in tables.MANIFEST.files(ws):
        with ws.fs.open(path, "rb") as fh:
            part = pq.ParquetFile(fh)
            ids = part.read(columns=["image_id"]).column("image_id").to_numpy(zero_copy_only=False)
        if (part.schema_arrow.metadata or {}).get(SORTED_KEY) != b"image_id":
            ids = np.sort(ids)
        pos = np.searchsorted(ids, wanted)
        hit = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == wanted)
        name = part_name(path)
        for image_id, p in zip(wanted[hit], pos[hit]):
            out.setdefault(str(image_id), shard_name(name, int(p) // shard_size))
    return out
