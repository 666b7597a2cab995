"""Where every table lives, local or on s3://, and how it is written safely.

Layout under the workspace root:

    tables/manifest/part-*.parquet            one part per ingest (immutable)
    tables/<table>/<run_id>/<shard>.parquet   predictions, pairs, errors of a scoring run
    tables/<table>/*.parquet                  bounds, candidates, ratings, labels, models
    runs/<run_id>/run.json                    what the run is (models, versions, shard size)
    runs/<run_id>/shards/<shard>.json         completion marker, written after the shard's tables
    cache/maps/<model>/<version>/<id[:2]>/<image_id>.png   compressed prediction maps

Every file is written whole or not at all: locally to a temporary name then renamed, on
object stores with a single PUT. A shard is committed only once its marker exists.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import uuid
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

TABLES = ("manifest", "predictions", "pairs", "errors", "bounds", "candidates", "ratings", "labels", "models")


def split_uri(uri: str) -> tuple[str, str]:
    """('s3', 'bucket/key') or ('file', '/abs/path')."""
    if "://" in uri:
        protocol, path = uri.split("://", 1)
        if protocol == "file":
            return "file", path
        return protocol, path
    return "file", os.path.abspath(uri)


def filesystem(uri: str, storage_options: dict | None = None) -> fsspec.AbstractFileSystem:
    protocol, _ = split_uri(uri)
    options = storage_options if protocol not in ("file", "local") else {}
    return fsspec.filesystem(protocol, **(options or {}))


@dataclass
class Workspace:
    """A root URI plus the fsspec filesystem that reaches it."""

    uri: str
    storage_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.protocol, root = split_uri(self.uri)
        self.root = root.rstrip("/")
        self.fs = filesystem(self.uri, self.storage_options)
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)

    @classmethod
    def from_config(cls, config) -> Workspace:
        return cls(config.workspace_uri, dict(config.storage_options))

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    # ---- paths -------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """A path inside the workspace, as the filesystem understands it (no protocol)."""
        return posixpath.join(self.root, *parts)

    def url(self, path: str) -> str:
        """A full URI for a path returned by `path` (what DuckDB and pyarrow are given)."""
        return path if self.is_local else f"{self.protocol}://{path}"

    def table_dir(self, table: str) -> str:
        return self.path("tables", table)

    def table_glob(self, table: str) -> str:
        """A glob matching every Parquet file of a table, for DuckDB's read_parquet."""
        depth = "*/*.parquet" if table in ("predictions", "pairs", "errors") else "*.parquet"
        return self.url(posixpath.join(self.table_dir(table), depth))

    # ---- raw I/O -----------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def put_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file atomically."""
        if self.is_local:
            directory = os.path.dirname(path)
            os.makedirs(directory, exist_ok=True)
            tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def get_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def put_json(self, path: str, obj) -> None:
        self.put_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())

    def get_json(self, path: str):
        return json.loads(self.get_bytes(path))

    def listdir(self, path: str) -> list[str]:
        """Names (not paths) of the entries of a folder; empty when it does not exist."""
        try:
            entries = self.fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def glob(self, pattern: str) -> list[str]:
        if not self.is_local:
            self.fs.invalidate_cache()
        return sorted(p for p in self.fs.glob(pattern) if not posixpath.basename(p).startswith(".tmp-"))

    def remove(self, path: str, recursive: bool = False) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=recursive)

    # ---- tables ------------------------------------------------------------------------
    def write_parquet(self, path: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.put_bytes(path, buf.getvalue())

    def read_parquet(self, paths: list[str], schema: pa.Schema | None = None) -> pa.Table | None:
        """Concatenate Parquet files; None when there are none."""
        if not paths:
            return None
        tables = [pq.read_table(p, filesystem=self.fs) for p in paths]
        if schema is not None:
            tables = [t.select(schema.names).cast(schema) for t in tables]
        return pa.concat_tables(tables, promote_options="default")

    def table_files(self, table: str, run_id: str | None = None, committed_only: bool = True) -> list[str]:
        """Parquet files of a table; for run tables only those of committed shards."""
        if table in ("predictions", "pairs", "errors"):
            runs = [run_id] if run_id else self.listdir(self.table_dir(table))
            files = []
            for run in runs:
                run_files = self.glob(self.path("tables", table, run, "*.parquet"))
                if committed_only and not run.startswith("ingest"):
                    done = set(self.committed_shards(run))
                    run_files = [f for f in run_files if posixpath.basename(f)[: -len(".parquet")] in done]
                files.extend(run_files)
            return files
        return self.glob(self.path("tables", table, "*.parquet"))

    def read_table(self, table: str, run_id: str | None = None) -> pa.Table | None:
        return self.read_parquet(self.table_files(table, run_id))

    # ---- runs and shards ---------------------------------------------------------------
    def run_dir(self, run_id: str) -> str:
        return self.path("runs", run_id)

    def shard_marker(self, run_id: str, shard: str) -> str:
        return self.path("runs", run_id, "shards", f"{shard}.json")

    def committed_shards(self, run_id: str) -> list[str]:
        names = self.listdir(self.path("runs", run_id, "shards"))
        return [n[: -len(".json")] for n in names if n.endswith(".json") and not n.startswith(".tmp-")]

    def runs(self) -> list[dict]:
        """Every scoring run's record, oldest first."""
        records = []
        for run_id in self.listdir(self.path("runs")):
            record_path = self.path("runs", run_id, "run.json")
            if self.exists(record_path):
                records.append(self.get_json(record_path))
        return sorted(records, key=lambda r: r.get("created_at", ""))

    # ---- prediction map cache ----------------------------------------------------------
    def map_path(self, model: str, version: str, image_id: str) -> str:
        return self.path("cache", "maps", model, version, image_id[:2], f"{image_id}.png")
