"""Raters and their secret links.

A token is `<name>.<secret>`: the rater's name, then 32 random bytes. Only the SHA-256 of the
whole token is stored (rating/raters/<name>.json), so the workspace never holds a usable
secret; a fast hash is enough for tokens of that entropy. The name tells the server which
record to read, so every request checks the token against the rater's current record:
a new rater's link works at once, `add-rater` again (a new token) retires the old one at
once, and `rate revoke` (the record deleted) ends the rater's access at once, in every
server process that shares the workspace. A token without a name is no token.

A file in rating/raters/ that cannot be read as a rater record is skipped and reported
(`problems`), never fatal to the other raters. Every file of the rating storage is read
through the untrusted-bytes boundary (`read_storage`): a FIFO, a device or a symlink to one is
refused without being opened for reading, and no file is read past its size limit, so a
hostile file there can neither hang the rating app nor fill its memory.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from madmine.errors import MadmineError
from madmine.untrusted import ImageError, read_files
from madmine.workspace import Workspace

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_RECORD_BYTES = 64 << 10


class RaterError(MadmineError):
    """A rater name that cannot be used."""


@dataclass(frozen=True)
class Problem:
    """A file of the rating storage that was skipped, and why."""

    path: str
    reason: str


def valid_name(name: object) -> bool:
    """A full match: no newline after the name, no path separator inside it."""
    return isinstance(name, str) and NAME.fullmatch(name) is not None


def check_name(name: str) -> str:
    if not valid_name(name):
        raise RaterError(f"rater name {name!r} must be 1-64 letters, digits, '.', '-' or '_' (starting with a letter or digit)")
    return name


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def raters_dir(ws: Workspace) -> str:
    return ws.path("rating", "raters")


def record_path(ws: Workspace, name: str) -> str:
    return ws.path("rating", "raters", f"{check_name(name)}.json")


def add_rater(ws: Workspace, name: str) -> str:
    """Create (or re-key) a rater; returns the token, shown once."""
    check_name(name)
    token = f"{name}.{secrets.token_urlsafe(32)}"
    record = {"name": name, "token_sha256": hash_token(token), "created_at": datetime.now(UTC).isoformat()}
    ws.put_json(record_path(ws, name), record)
    return token


def revoke(ws: Workspace, name: str) -> None:
    """Delete the rater's record: their link and API token stop working at once. Votes stay.

    A file in the record's place that is not a valid record goes too (it gave no access)."""
    path = record_path(ws, name)
    if not ws.exists(path):
        known = ", ".join(list_raters(ws)) or "none"
        raise RaterError(f"no rater named {name!r} (raters: {known})")
    ws.remove(path)
    for kind in RATER_FOLDERS:  # their unused sign-in links and sessions ended with the record: tidy them away
        ws.remove(rater_folder(ws, kind, name), recursive=True)


RATER_FOLDERS = ("logins", "sessions")  # per rater: one-time sign-in codes and browser sessions (logins.py)


def rater_folder(ws: Workspace, kind: str, name: str) -> str:
    """rating/<kind>/<name>/, kind one of RATER_FOLDERS."""
    if kind not in RATER_FOLDERS:
        raise ValueError(kind)
    return ws.path("rating", kind, check_name(name))


def list_raters(ws: Workspace) -> list[str]:
    """Names of the raters whose records are valid (the files `scan` skips are not raters)."""
    return sorted(scan(ws)[0])


def read_storage(ws: Workspace, paths: list[str], max_bytes: int) -> dict[str, bytes | ImageError]:
    """path -> bytes, or the ImageError that refused the file: the rating storage's files
    through the untrusted-bytes boundary (never a FIFO, a device or more than max_bytes)."""
    return read_files(ws.fs, paths, local=ws.is_local, max_bytes=max_bytes)


def small_json(data: bytes, max_bytes: int, what: str):
    """The JSON in a small storage file (a rater record, a vote event); ValueError says what is wrong."""
    if len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes; {what}")
    if not data.strip():
        raise ValueError("empty file")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({str(exc)[:80]})") from None


def parse_record(data: bytes, name: str) -> dict:
    """A rater record's JSON, checked; ValueError says what is wrong with it."""
    record = small_json(data, MAX_RECORD_BYTES, "a rater record is under 200")
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if record.get("name") != name:
        raise ValueError(f"its name field is {str(record.get('name'))[:40]!r}, not {name!r}")
    if not isinstance(record.get("token_sha256"), str) or not _HEX64.fullmatch(record["token_sha256"]):
        raise ValueError("no token_sha256 (64 hex digits)")
    return record


def scan(ws: Workspace) -> tuple[dict[str, dict], list[Problem]]:
    """Every readable rater record by name, and the files that were skipped."""
    records, problems, named = {}, [], {}
    for name in ws.listdir(raters_dir(ws)):
        if name.startswith(".tmp-"):
            continue
        path = ws.path("rating", "raters", name)
        stem = name[: -len(".json")] if name.endswith(".json") else ""
        if not valid_name(stem):
            problems.append(Problem(path, "not named <rater>.json"))
            continue
        named[path] = stem
    for path, blob in read_storage(ws, list(named), MAX_RECORD_BYTES).items():
        try:
            if isinstance(blob, ImageError):
                raise ValueError(str(blob))
            records[named[path]] = parse_record(blob, named[path])
        except ValueError as exc:
            problems.append(Problem(path, str(exc) or type(exc).__name__))
    return records, problems


class RaterRegistry:
    """token -> rater name, checked against the workspace on every lookup."""

    def __init__(self, ws: Workspace):
        self.ws = ws

    def record(self, name: str) -> dict | None:
        """The rater's valid record, or None (no record, or a file that is not one)."""
        path = record_path(self.ws, name)
        data = read_storage(self.ws, [path], MAX_RECORD_BYTES)[path]
        if isinstance(data, ImageError):
            if data.reason == "unreadable" and not self.ws.is_local:  # the object store failed: a 503, not a 403
                raise OSError(str(data))
            return None  # missing, or not a file that could be a record (`rate status` reports it)
        try:
            return parse_record(data, name)
        except ValueError:
            return None  # `rate status` reports the file

    def lookup(self, token: str | None) -> str | None:
        if not token or not isinstance(token, str) or len(token) > 256:
            return None
        digest = hash_token(token)
        name, _, secret = token.rpartition(".")
        if not (name and secret and valid_name(name)):
            return None
        record = self.record(name)
        return name if record and hmac.compare_digest(record["token_sha256"], digest) else None
