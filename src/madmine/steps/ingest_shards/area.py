"""An ingest's working area in the workspace, removed when the ingest is done:

    ingest/<ingest_id>/todo.parquet            the new URIs, in shards of shard_size rows (row groups)
    ingest/<ingest_id>/staged/<shard>.parquet  a worker's manifest rows for its shard, sorted by image_id
    ingest/<ingest_id>/shards/<shard>.json     its completion marker (the shard's summary)

Readers of the manifest never look here: a staged part becomes a manifest part only when the
driver promotes it, after duplicates across shards are settled (promote.py).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from madmine.completion import Markers
from madmine.workspace import Workspace

AREA = "ingest"


@dataclass(frozen=True)
class IngestArea:
    ws: Workspace
    ingest_id: str

    @property
    def folder(self) -> str:
        return self.ws.path(AREA, self.ingest_id)

    @property
    def todo(self) -> str:
        return posixpath.join(self.folder, "todo.parquet")

    def staged(self, shard: str) -> str:
        return posixpath.join(self.folder, "staged", f"{shard}.parquet")

    @property
    def markers(self) -> Markers:
        return Markers(self.ws, posixpath.join(AREA, self.ingest_id, "shards"))

    def part(self, shard: str) -> str:
        """The manifest part a promoted shard becomes (scoring names its own shards after it)."""
        return f"part-{self.ingest_id}-{shard}"

    def errors_key(self, shard: str) -> str:
        """The errors table's file of a shard: tables/errors/ingest/<ingest_id>-<shard>.parquet."""
        return f"{self.ingest_id}-{shard}"
