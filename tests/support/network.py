"""Small helpers every test that starts a server or a cluster needs: a free loopback port, and a
bounded wait for a condition."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1 (the only address tests bind)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, alive=lambda: True, every: float = 0.3):
    """condition()'s first truthy value within `timeout` seconds; AssertionError naming `what` when it
    never comes, or as soon as `alive()` says the thing waited on has stopped."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        assert alive(), f"stopped before {what}"
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
