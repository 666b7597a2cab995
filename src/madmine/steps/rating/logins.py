"""One-time sign-in codes, and the browser sessions they open.

A rater's link is `/login#<code>`: the code is `<name>.<32 random bytes>`, good for one
sign-in. A browser records the link in its global history before any script of the page
runs, so whatever the link holds must be worthless once used: the login page exchanges the
code once for a session (an HttpOnly cookie), and the code is deleted as it is exchanged. A
history entry, a synced profile or a shoulder-surfed link then opens nothing.

Only SHA-256 digests are stored, as for rater tokens: the code's in
rating/logins/<name>/<digest>.json, the session's in rating/sessions/<name>/<digest>.json.
Both name the rater record's token digest they were issued under, so re-keying a rater
(`add-rater` again) or revoking them ends their unused links and open sessions at once, in
every server on the workspace. Sessions end after SESSION_DAYS.

A code is exchanged at most once: within a server, under a lock; between servers on a
local workspace, by deleting its file (only one deletion succeeds). On an object store a
deletion cannot tell who won, so two servers exchanging the same code in the same instant
could both succeed.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
from datetime import UTC, datetime, timedelta

from madmine.steps.rating.tokens import (
    MAX_RECORD_BYTES,
    RaterError,
    RaterRegistry,
    hash_token,
    rater_folder,
    read_storage,
    small_json,
    valid_name,
)
from madmine.workspace import Workspace

SESSION_DAYS = 30
_REDEEM_LOCK = threading.Lock()


def _path(ws: Workspace, kind: str, name: str, digest: str) -> str:
    return f"{rater_folder(ws, kind, name)}/{digest}.json"


def _split(value: object) -> tuple[str, str] | None:
    """(name, secret) of a code or session value, or None when it is not one."""
    if not isinstance(value, str) or len(value) > 256:
        return None
    name, _, secret = value.rpartition(".")
    return (name, secret) if valid_name(name) and secret else None


def _read(ws: Workspace, path: str) -> dict | None:
    blob = read_storage(ws, [path], MAX_RECORD_BYTES)[path]
    if not isinstance(blob, bytes):
        return None
    try:
        data = small_json(blob, MAX_RECORD_BYTES, "a sign-in record is under 300")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _current_key(ws: Workspace, name: str) -> str | None:
    """The token digest of the rater's record now (None: no valid record, the rater is revoked)."""
    record = RaterRegistry(ws).record(name)
    return record["token_sha256"] if record else None


def _issued_under_current_key(ws: Workspace, entry: dict | None, name: str) -> bool:
    key = _current_key(ws, name)
    return bool(entry and key and isinstance(entry.get("record_sha256"), str)
                and hmac.compare_digest(entry["record_sha256"], key) and entry.get("name") == name)


def _issue(ws: Workspace, kind: str, name: str, **extra) -> str:
    """A new secret `<name>.<32 random bytes>` of `kind` for an existing rater; its digest is stored."""
    key = _current_key(ws, name)
    if key is None:
        raise RaterError(f"no rater named {name!r}: add them first (madmine rate add-rater {name})")
    value = f"{name}.{secrets.token_urlsafe(32)}"
    entry = {"name": name, "record_sha256": key, "created_at": datetime.now(UTC).isoformat(), **extra}
    ws.put_json(_path(ws, kind, name, hash_token(value)), entry)
    return value


def _entry(ws: Workspace, kind: str, value: object) -> tuple[str, str, dict] | None:
    """(rater, path, stored entry) of a secret of `kind` issued under the rater's current key, else None."""
    parts = _split(value)
    if parts is None:
        return None
    name = parts[0]
    path = _path(ws, kind, name, hash_token(value))
    entry = _read(ws, path)
    return (name, path, entry) if _issued_under_current_key(ws, entry, name) else None


def issue_code(ws: Workspace, name: str) -> str:
    """A new one-time sign-in code for an existing rater (their other links and sessions stay)."""
    return _issue(ws, "logins", name)


def redeem_code(ws: Workspace, code: object) -> str | None:
    """The rater a valid, unused code belongs to, the code used up; None for any other code."""
    with _REDEEM_LOCK:
        found = _entry(ws, "logins", code)
        return found[0] if found and _consume(ws, found[1]) else None


def _consume(ws: Workspace, path: str) -> bool:
    """Delete the file; False when it was gone already (someone else used the code)."""
    if ws.is_local:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True
    try:
        ws.fs.rm_file(path)
    except FileNotFoundError:
        return False
    return True


def open_session(ws: Workspace, name: str) -> str:
    """A new session for the rater: the value its cookie holds."""
    expires = datetime.now(UTC) + timedelta(days=SESSION_DAYS)
    return _issue(ws, "sessions", name, expires_at=expires.isoformat())


def session_rater(ws: Workspace, value: object) -> str | None:
    """The rater of a live session (unexpired, issued under the rater's current key), else None."""
    found = _entry(ws, "sessions", value)
    if found is None:
        return None
    try:
        expires = datetime.fromisoformat(found[2]["expires_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return found[0] if expires.tzinfo is not None and expires > datetime.now(UTC) else None


def close_session(ws: Workspace, value: object) -> None:
    """End a session (signing out); an unknown value is ignored."""
    parts = _split(value)
    if parts is not None:
        ws.remove(_path(ws, "sessions", parts[0], hash_token(value)))
