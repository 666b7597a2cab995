"""The workspace: one root URI (a local folder or s3://bucket/prefix) and the fsspec
filesystem that reaches it, with every write atomic.

Every file is written whole or not at all: locally to a temporary name then renamed, on
object stores with a single PUT. What lives where is decided elsewhere: tables in
madmine.tables, completion markers in madmine.completion, prediction maps in the map store
(madmine.steps.score.map_store); docs/architecture.md lists every area.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import shutil
import uuid
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from madmine import objectstore


def is_remote(uri: str) -> bool:
    """An object-store URI (s3://...), as opposed to a local path or file:// URI."""
    return "://" in uri and not uri.startswith("file://")


def split_uri(uri: str) -> tuple[str, str]:
    """('s3', 'bucket/key') or ('file', '/abs/path')."""
    if "://" in uri:
        protocol, path = uri.split("://", 1)
        if protocol == "file":
            return "file", path
        return protocol, path
    return "file", os.path.abspath(uri)


def filesystem(uri: str, storage_options: dict | None = None) -> fsspec.AbstractFileSystem:
    """The filesystem of a URI; an object store's retries each request a bounded number of
    times with backoff, and counts the retries (madmine.objectstore)."""
    protocol, _ = split_uri(uri)
    if protocol in ("file", "local"):
        return fsspec.filesystem(protocol)
    if protocol in objectstore.PROTOCOLS:
        fs = fsspec.filesystem(protocol, **objectstore.with_retry_policy(storage_options))
        objectstore.watch(fs)
        return fs
    return fsspec.filesystem(protocol, **(storage_options or {}))


def write_atomic(uri: str, data: bytes, storage_options: dict | None = None) -> None:
    """Write a whole file, or nothing: locally to a temporary name beside it, then renamed (readable
    by all, as any file the user writes); on an object store in a single PUT."""
    protocol, path = split_uri(uri)
    if protocol != "file":
        filesystem(uri, storage_options).pipe_file(path, data)
        return
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    """The bytes of a Parquet file of `table` (zstd); the same table always gives the same bytes."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=row_group_size)
    return buf.getvalue()


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

    # ---- raw I/O -----------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def put_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file atomically."""
        write_atomic(self.url(path), data, self.storage_options)

    def put_file(self, path: str, local_path: str) -> None:
        """Upload a local file whole (streamed, never held in memory), atomically."""
        if self.is_local:
            directory = os.path.dirname(path)
            os.makedirs(directory, exist_ok=True)
            tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
            shutil.copyfile(local_path, tmp)
            os.replace(tmp, path)
        else:
            self.fs.put_file(local_path, path)

    def move(self, src: str, dst: str) -> None:
        """Give a whole file another name: a rename, or a server-side copy (atomic for the
        destination) and a delete on an object store."""
        if self.is_local:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(src, dst)
        else:
            self.fs.copy(src, dst)
            self.fs.rm(src)

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

    # ---- Parquet -------------------------------------------------------------------------
    def write_parquet(self, path: str, table: pa.Table, row_group_size: int | None = None) -> None:
        self.put_bytes(path, parquet_bytes(table, row_group_size))

    def read_parquet(self, paths: list[str], schema: pa.Schema | None = None) -> pa.Table | None:
        """Concatenate Parquet files; None when there are none."""
        if not paths:
            return None
        tables = [pq.read_table(p, filesystem=self.fs) for p in paths]
        if schema is not None:
            tables = [t.select(schema.names).cast(schema) for t in tables]
        return pa.concat_tables(tables, promote_options="default")


def read_uri(uri: str, storage_options: dict | None = None) -> bytes:
    """The bytes of any local path or object-store URI (images, weights, label maps)."""
    return filesystem(uri, storage_options).cat_file(split_uri(uri)[1])
