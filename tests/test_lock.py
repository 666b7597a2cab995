"""The workspace lock: live holders are respected, dead ones on this machine are taken over at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from madmine.lock import LockHeld, WorkspaceLock
from madmine.workspace import Workspace


def held_by(ws: Workspace, name: str, owner: str) -> None:
    ws.put_json(ws.path("locks", f"{name}.json"), {"token": "theirs", "owner": owner, "heartbeat": time.time()})


@pytest.fixture()
def ws(tmp_path):
    return Workspace(str(tmp_path / "ws"))


def test_a_fresh_lock_of_a_live_process_here_is_respected(ws):
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            held_by(ws, "job", f"{socket.gethostname()}:{other.pid}")
            with pytest.raises(LockHeld, match="another run holds"):
                WorkspaceLock(ws, "job", settle=0.05).acquire()
            assert ws.get_json(ws.path("locks", "job.json"))["token"] == "theirs"  # left alone
        finally:
            other.kill()


def test_a_fresh_lock_of_a_process_that_exited_here_is_taken_over_at_once(ws):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = f"{socket.gethostname()}:{int(gone.stdout)}"
    held_by(ws, "job", owner)
    with WorkspaceLock(ws, "job", settle=0.05) as lock:
        assert lock.took_over["owner"] == owner
        assert ws.get_json(lock.path)["owner"] == f"{socket.gethostname()}:{os.getpid()}"
    assert not ws.exists(lock.path)


def test_a_fresh_lock_of_another_machine_is_respected_whatever_its_pid(ws):
    held_by(ws, "job", "some-other-host:999999")
    with pytest.raises(LockHeld):
        WorkspaceLock(ws, "job", settle=0.05).acquire()
    assert ws.get_json(ws.path("locks", "job.json"))["token"] == "theirs"  # left alone
