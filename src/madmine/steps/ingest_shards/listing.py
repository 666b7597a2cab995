"""Listing: SOURCE arguments -> image URIs, streamed into a Parquet file a page at a time.

An s3:// prefix of 10M objects is listed page by page (1,000 keys a request), and so is an
s3:// glob (the folder before its first wildcard); a local folder entry by entry, a URI list
line by line. The URIs go to the listing file in row groups: the driver never holds the list.
Duplicates and order are settled later, in DuckDB (plan.py).
"""

from __future__ import annotations

import glob as globbing
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.asyn import sync
from fsspec.utils import glob_translate

from madmine import objectstore
from madmine.images import IMAGE_EXTENSIONS
from madmine.workspace import filesystem, split_uri

URI_LIST_SUFFIXES = (".txt", ".lst", ".uris")
SOURCE_ERRORS = ("source not found", "source unreadable")
ROW_GROUP = 1 << 16
SCHEMA = pa.schema([("uri", pa.string())])
PAGE = 1000  # keys per listing request on an object store
_WILDCARD = re.compile(r"[*?\[]")


@dataclass
class Listed:
    """What listing found: URIs written (duplicates included), non-images skipped, source errors."""

    uris: int = 0
    skipped: int = 0
    errors: list[dict] = field(default_factory=list)


def source_error(uri: str, reason: str, detail: str) -> dict:
    return {"run_id": "ingest", "uri": uri, "image_id": None, "stage": "ingest", "error": reason, "detail": detail}


def _full_uri(protocol: str, path: str) -> str:
    return path if protocol == "file" else f"{protocol}://{path}"


def _walk_local(path: str) -> Iterator[str]:
    """Every file under a local folder, entry by entry (os.scandir), symlinked folders not followed."""
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        yield entry.path
        except OSError:
            continue  # an unreadable subfolder: its files cannot be listed


async def _next_page(pages, n: int) -> list[dict]:
    out = []
    try:
        while len(out) < n:
            out.append(await pages.__anext__())
    except StopAsyncIteration:
        pass
    return out


def _walk_s3(fs, path: str, delimiter: str = "") -> Iterator[str]:
    """Every object under an s3:// prefix, a page of keys at a time (s3fs's listing iterator);
    with delimiter "/", only the objects directly in it."""
    bucket, _, prefix = path.partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    pages = fs._iterdir(bucket, delimiter=delimiter, prefix=prefix)
    while True:
        page = sync(fs.loop, _next_page, pages, PAGE)
        if not page:
            return
        yield from (info["name"] for info in page if info.get("type") == "file")


def _files_under(fs, protocol: str, path: str) -> Iterator[str]:
    if protocol == "file":
        return _walk_local(path)
    if protocol in ("s3", "s3a"):
        return _walk_s3(fs, path)
    return iter(fs.find(path))


def _glob(fs, protocol: str, path: str) -> Iterator[str]:
    if protocol == "file":
        return globbing.iglob(path, recursive=True)
    fixed, _, _ = path.partition(_WILDCARD.search(path).group())
    if protocol in ("s3", "s3a") and "/" in fixed:  # a wildcard in the bucket's name: fs.glob lists buckets
        return _glob_s3(fs, path, fixed)
    return iter(fs.glob(path))


def _glob_s3(fs, path: str, fixed: str) -> Iterator[str]:
    """The objects an s3:// glob names, streamed: the folder before its first wildcard (`fixed`
    is what precedes it) listed a page at a time, only that folder's own objects when no wildcard
    spans folders, and each key matched by fsspec's glob rules. fs.glob would hold the whole
    listing first."""
    pattern = re.compile(glob_translate(path))
    nested = "**" in path or "/" in path[len(fixed):]
    keys = _walk_s3(fs, fixed.rpartition("/")[0], delimiter="" if nested else "/")
    return (key for key in keys if pattern.match(key))


def _uris_of(source: str, storage_options: dict, listed: Listed) -> Iterator[str]:
    """The image URIs one SOURCE argument names; a missing or unreadable source is an error row."""
    protocol, path = split_uri(source)
    fs = filesystem(source, storage_options)
    if path.endswith(URI_LIST_SUFFIXES) and fs.isfile(path):
        with fs.open(path, "rb") as fh:
            for raw in fh:
                line = raw.decode("utf-8", errors="replace").strip()
                if line and not line.startswith("#"):
                    yield line if "://" in line else _full_uri("file", split_uri(line)[1])
        return
    if _WILDCARD.search(path):
        paths = _glob(fs, protocol, path)
    elif fs.isdir(path):
        paths = _files_under(fs, protocol, path)
    elif fs.exists(path):
        yield _full_uri(protocol, path)
        return
    else:
        listed.errors.append(source_error(source, "source not found", f"{source} does not exist"))
        return
    for p in paths:
        if p.lower().endswith(IMAGE_EXTENSIONS):
            yield _full_uri(protocol, p)
        else:
            listed.skipped += 1


def write_listing(sources: list[str], storage_options: dict | None, out: str) -> Listed:
    """Stream the URIs of `sources` into the Parquet file `out` (local), a row group at a time."""
    listed = Listed()
    batch: list[str] = []
    with pq.ParquetWriter(out, SCHEMA, compression="zstd") as writer:
        def flush() -> None:
            if batch:
                writer.write_table(pa.table({"uri": batch}, schema=SCHEMA))
                listed.uris += len(batch)
                batch.clear()

        for source in sources:
            try:
                for uri in _uris_of(source, storage_options or {}, listed):
                    batch.append(uri)
                    if len(batch) >= ROW_GROUP:
                        flush()
            except (OSError, ValueError) as exc:
                down = objectstore.unavailable(exc)
                if down is not None:  # the store failed every attempt: stop, rather than call the source unreadable
                    raise down from exc
                listed.errors.append(source_error(source, "source unreadable", f"{type(exc).__name__}: {exc}"))
        flush()
    return listed
