"""Raters and their secret links.

A token is 32 random bytes; only its SHA-256 is stored (rating/raters/<name>.json), so the
workspace never holds a usable secret. A fast hash is enough for tokens of that entropy.
Adding a rater again gives a new token and retires the old one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from datetime import UTC, datetime

from madmine.errors import MadmineError
from madmine.workspace import Workspace

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RELOAD_S = 5.0


class RaterError(MadmineError):
    """A rater name that cannot be used."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def raters_dir(ws: Workspace) -> str:
    return ws.path("rating", "raters")


def add_rater(ws: Workspace, name: str) -> str:
    """Create (or re-key) a rater; returns the token, shown once."""
    if not NAME.match(name):
        raise RaterError(f"rater name {name!r} must be 1-64 letters, digits, '.', '-' or '_' (starting with a letter or digit)")
    token = secrets.token_urlsafe(32)
    record = {"name": name, "token_sha256": hash_token(token), "created_at": datetime.now(UTC).isoformat()}
    ws.put_json(ws.path("rating", "raters", f"{name}.json"), record)
    return token


def list_raters(ws: Workspace) -> list[str]:
    return [n[: -len(".json")] for n in ws.listdir(raters_dir(ws)) if n.endswith(".json") and not n.startswith(".tmp-")]


class RaterRegistry:
    """token -> rater name, re-read from the workspace every few seconds so new raters work at once."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self._by_hash: dict[str, str] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def _reload(self) -> None:
        by_hash = {}
        for name in list_raters(self.ws):
            record = self.ws.get_json(self.ws.path("rating", "raters", f"{name}.json"))
            by_hash[record["token_sha256"]] = record["name"]
        self._by_hash = by_hash
        self._loaded_at = time.monotonic()

    def lookup(self, token: str | None) -> str | None:
        if not token:
            return None
        digest = hash_token(token)
        with self._lock:
            if time.monotonic() - self._loaded_at > RELOAD_S:
                self._reload()
            for known, name in self._by_hash.items():
                if hmac.compare_digest(known, digest):
                    return name
        return None
