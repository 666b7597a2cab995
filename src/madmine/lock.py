"""A lock file in the workspace (local or s3://) so that two nightly runs, or two drivers
fine-tuning the same round, never overlap.

The holder refreshes a heartbeat; a lock whose heartbeat is older than `stale_after`
seconds belongs to a crashed run and is taken over, and so at once is a lock whose owner
was a process on this machine that no longer exists (a killed driver, resumed at once). Object stores have no exclusive
create, so acquisition writes a unique token, waits `settle` seconds, and reads it back:
of two writers racing, only the last one still finds its own token.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
import uuid

import psutil

from madmine.errors import MadmineError
from madmine.workspace import Workspace


class LockHeld(MadmineError):
    """Another live run holds the lock."""


def _now() -> float:
    return time.time()


class WorkspaceLock:
    def __init__(self, workspace: Workspace, name: str, stale_after: float = 1800.0, heartbeat: float = 30.0, settle: float = 1.0):
        self.workspace = workspace
        self.path = workspace.path("locks", f"{name}.json")
        self.stale_after = stale_after
        self.heartbeat_every = heartbeat
        self.settle = settle
        self.token = uuid.uuid4().hex
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: dict | None = None

    def _record(self) -> dict:
        return {
            "token": self.token,
            "owner": self.owner,
            "heartbeat": _now(),
            "heartbeat_utc": dt.datetime.now(dt.timezone.utc).isoformat(),
        }

    def read(self) -> dict | None:
        try:
            return self.workspace.get_json(self.path)
        except (FileNotFoundError, ValueError):
            return None

    def _owner_is_gone(self, record: dict) -> bool:
        """The holder was a process of this machine that has exited (its pid is free or reused by us)."""
        host, _, pid = str(record.get("owner", "")).rpartition(":")
        if host != socket.gethostname() or not pid.isdigit():
            return False
        return int(pid) == os.getpid() or not psutil.pid_exists(int(pid))

    def acquire(self) -> None:
        current = self.read()
        live = current and _now() - float(current.get("heartbeat", 0)) < self.stale_after
        if live and not self._owner_is_gone(current):
            age = _now() - float(current["heartbeat"])
            raise LockHeld(
                f"another run holds {self.path} (owner {current.get('owner')}, heartbeat {age:.0f} s ago); "
                "exiting. It is taken over automatically once its heartbeat is older than "
                f"{self.stale_after:.0f} s."
            )
        if current:
            self.took_over = current
        self.workspace.put_json(self.path, self._record())
        time.sleep(self.settle)
        mine = self.read()
        if not mine or mine.get("token") != self.token:
            raise LockHeld(f"another run took {self.path} at the same moment (owner {mine and mine.get('owner')}); exiting")
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_every):
            current = self.read()
            if not current or current.get("token") != self.token:
                return  # taken over (we were considered dead): stop touching it
            self.workspace.put_json(self.path, self._record())

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        current = self.read()
        if current and current.get("token") == self.token:
            self.workspace.remove(self.path)

    def __enter__(self) -> WorkspaceLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
