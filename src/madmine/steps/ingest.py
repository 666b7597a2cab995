"""Ingest: files, folders, globs, s3:// prefixes or URI lists -> the `manifest` table.

image_id is a hash of the bytes, so exact duplicates collapse wherever they come from, and
re-running an ingest adds only what is new. Every unreadable source becomes a row of the
`errors` table; none stops the ingest. Bytes are read and decoded through the untrusted-bytes
boundary (madmine.untrusted): only regular files up to max_bytes, decoded within
decode_timeout_s, any failure that file's error row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import imagehash
import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from madmine import tables
from madmine.errors import MadmineError
from madmine.images import IMAGE_EXTENSIONS, ImageError, probe
from madmine.steps.context import StepContext, from_section
from madmine.untrusted import Limits, read_bytes
from madmine.workspace import Workspace, filesystem, split_uri

URI_LIST_SUFFIXES = (".txt", ".lst", ".uris")
MANIFEST_ROW_GROUP = 1024
SOURCE_ERRORS = ("source not found", "source unreadable")


def image_id_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _full_uri(protocol: str, path: str) -> str:
    return path if protocol == "file" else f"{protocol}://{path}"


@dataclass
class SourceListing:
    uris: list[str] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    skipped: int = 0  # files that are not images by extension


def expand_sources(sources: list[str], storage_options: dict | None = None) -> SourceListing:
    """Turn SOURCE arguments into image URIs (sorted, unique)."""
    out = SourceListing()
    seen: set[str] = set()

    def add(uri: str) -> None:
        if uri not in seen:
            seen.add(uri)
            out.uris.append(uri)

    for source in sources:
        protocol, path = split_uri(source)
        fs = filesystem(source, storage_options)
        try:
            if path.endswith(URI_LIST_SUFFIXES) and fs.isfile(path):
                text = fs.cat_file(path).decode("utf-8", errors="replace")
                for line in text.splitlines():
                    line = line.strip()
                    if line and not line.startswith("#"):
                        add(line if "://" in line else _full_uri("file", split_uri(line)[1]))
            elif any(ch in path for ch in "*?["):
                for p in sorted(fs.glob(path)):
                    if p.lower().endswith(IMAGE_EXTENSIONS):
                        add(_full_uri(protocol, p))
                    else:
                        out.skipped += 1
            elif fs.isdir(path):
                for p in sorted(fs.find(path)):
                    if p.lower().endswith(IMAGE_EXTENSIONS):
                        add(_full_uri(protocol, p))
                    else:
                        out.skipped += 1
            elif fs.exists(path):
                add(_full_uri(protocol, path))
            else:
                out.errors.append(_error(source, None, "source not found", f"{source} does not exist"))
        except (OSError, ValueError) as exc:
            out.errors.append(_error(source, None, "source unreadable", f"{type(exc).__name__}: {exc}"))
    out.uris.sort()
    return out


def _error(uri: str, image_id: str | None, reason: str, detail: str) -> dict:
    return {"run_id": "ingest", "uri": uri, "image_id": image_id, "stage": "ingest", "error": reason, "detail": detail}


def _ingest_one(uri: str, storage_options: dict, limits: Limits) -> dict:
    image_id = None
    try:
        data = read_bytes(uri, storage_options, max_bytes=limits.max_bytes)
        image_id = image_id_of(data)
        small, width, height = probe(data, max_pixels=limits.max_pixels, min_side=limits.min_side,
                                     timeout_s=limits.decode_timeout_s)
        phash = int(str(imagehash.phash(small)), 16)
    except ImageError as exc:
        return {"error": _error(uri, image_id, exc.reason, exc.detail)}
    except Exception as exc:  # noqa: BLE001 - one file never stops an ingest
        return {"error": _error(uri, image_id, "ingest failed", f"{type(exc).__name__}: {exc}"[:500])}
    return {"row": {"image_id": image_id, "uri": uri, "bytes": len(data), "width": width, "height": height, "phash": phash}}


@dataclass
class IngestResult:
    added: int
    duplicates: int
    already_known: int
    errors: list[dict]
    skipped_non_images: int
    part: str | None
    failed_before: int = 0
    tried: int = 0  # files read in this ingest (new URIs)
    max_error_fraction: float = 1.0  # the error budget this ingest was run with

    @property
    def missing_sources(self) -> list[dict]:
        """Errors of SOURCE arguments themselves (not found, unreadable), as opposed to files in them."""
        return [e for e in self.errors if e["error"] in SOURCE_ERRORS]

    @property
    def file_errors(self) -> list[dict]:
        return [e for e in self.errors if e["error"] not in SOURCE_ERRORS]

    @property
    def failure(self) -> str | None:
        """Why this ingest must exit non-zero (a source missing, the error budget exceeded), or None."""
        max_error_fraction = self.max_error_fraction
        problems = []
        if self.missing_sources:
            shown = ", ".join(e["uri"] for e in self.missing_sources[:3])
            problems.append(f"{len(self.missing_sources)} source(s) not found or unreadable ({shown})")
        failed = len(self.file_errors)
        if self.tried and failed / self.tried > max_error_fraction:
            problems.append(
                f"{failed} of {self.tried} files failed ({failed / self.tried:.1%}), above max_error_fraction="
                f"{max_error_fraction:.1%}"
            )
        if not problems:
            return None
        return "ingest: " + "; ".join(problems) + "; what could be read was added (errors table, run_id = 'ingest')"


@dataclass(frozen=True)
class IngestParams:
    """One ingest: what to read, and the limits and error budget ([scoring]) it reads with."""

    sources: tuple[str, ...]
    workers: int = 8
    retry_errors: bool = False  # read again the files that failed an earlier ingest
    max_error_fraction: float = 0.05

    @classmethod
    def from_config(cls, config, sources, **overrides) -> IngestParams:
        return from_section(cls, config.scoring, sources=tuple(sources), **overrides)


def run(ctx: StepContext, params: IngestParams) -> IngestResult:
    """The ingest step: new images of `params.sources` into the manifest; `result.failure` says why a
    caller must fail (a source missing, more files failed than the error budget allows)."""
    if params.workers < 1:
        raise MadmineError(f"--workers must be at least 1, got {params.workers}")
    if not 0 <= params.max_error_fraction <= 1:
        raise MadmineError(f"--max-error-fraction must be within [0, 1], got {params.max_error_fraction}")
    result = ingest(ctx.ws, list(params.sources), storage_options=ctx.config.storage_options,
                    limits=Limits.of(ctx.config.scoring), workers=params.workers, show_progress=ctx.show_progress,
                    retry_errors=params.retry_errors)
    result.max_error_fraction = params.max_error_fraction
    return result


def ingest(
    workspace: Workspace,
    sources: list[str],
    *,
    storage_options: dict | None = None,
    limits: Limits = Limits(),
    workers: int = 8,
    show_progress: bool = True,
    retry_errors: bool = False,
) -> IngestResult:
    """Add the new images of `sources` to the manifest as one immutable part file.

    URIs that failed an earlier ingest are skipped unless `retry_errors` (a nightly run
    would otherwise record the same broken files every night).
    """
    if workers < 1:
        raise MadmineError(f"ingest needs at least 1 worker, got {workers}")
    storage_options = storage_options or {}
    listing = expand_sources(sources, storage_options)
    existing = tables.MANIFEST.read(workspace)
    known_ids: set[str] = set(existing.column("image_id").to_pylist()) if existing is not None else set()
    known_uris: set[str] = set(existing.column("uri").to_pylist()) if existing is not None else set()
    failed_before: set[str] = set()
    if not retry_errors:
        old_errors = tables.ERRORS.read(workspace, run_id="ingest")
        failed_before = set(old_errors.column("uri").to_pylist()) if old_errors is not None else set()
    todo = [u for u in listing.uris if u not in known_uris and u not in failed_before]

    rows: list[dict] = []
    errors = list(listing.errors)
    duplicates = 0
    with Progress(
        TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=not show_progress
    ) as progress:
        task = progress.add_task("ingest", total=len(todo))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            def one(uri: str) -> dict:
                return _ingest_one(uri, storage_options, limits)

            for result in pool.map(one, todo):
                progress.advance(task)
                if "error" in result:
                    errors.append(result["error"])
                    continue
                row = result["row"]
                if row["image_id"] in known_ids:
                    duplicates += 1
                    continue
                known_ids.add(row["image_id"])
                rows.append(row)

    stamp = dt.datetime.now(dt.timezone.utc)
    part = f"part-{stamp.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    if errors:
        table = pa.Table.from_pylist(errors, schema=tables.ERRORS.schema)
        tables.ERRORS.write(workspace, table, run_id="ingest", shard=part)
    if rows:
        for row in rows:
            row["ingested_at"] = stamp
        rows.sort(key=lambda r: r["image_id"])
        table = pa.Table.from_pylist(rows, schema=tables.MANIFEST.schema)
        # sorted, in small row groups: a scoring worker reads only its shard's rows
        tables.MANIFEST.write(workspace, table, metadata={tables.SORTED_BY: b"image_id"}, row_group_size=MANIFEST_ROW_GROUP,
                              part=part)
    return IngestResult(
        added=len(rows),
        duplicates=duplicates,
        already_known=len([u for u in listing.uris if u in known_uris]),
        failed_before=len([u for u in listing.uris if u in failed_before]),
        errors=errors,
        skipped_non_images=listing.skipped,
        part=part if rows else None,
        tried=len(todo),
    )
