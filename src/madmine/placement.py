"""Where a step's shards run: in this process, or on Ray (scoring and ingest both ask)."""

from __future__ import annotations

import os
import sys

from madmine.errors import MadmineError

EXECUTORS = ("auto", "ray", "local")


def resolve_executor(executor: str, ray_address: str | None, actors: int) -> str:
    """'auto' -> 'ray' when there is a cluster to use (an address, RAY_ADDRESS, or a Ray
    already running in this process, as in a Ray job's driver) or more than one actor to run;
    else 'local': the same shard worker on this machine (in this process; ingest's
    local shards of files in a process a core). On one machine with one actor, Ray
    adds only its start-up and services that take CPU from the work (measured in bench.score:
    the same shards ran 40% slower under an embedded Ray on 2 cores)."""
    if executor not in EXECUTORS:
        raise MadmineError(f"unknown executor {executor!r}: use 'auto', 'ray' or 'local'")
    if executor != "auto":
        return executor
    ray = sys.modules.get("ray")
    running = ray is not None and ray.is_initialized()
    return "ray" if ray_address or os.environ.get("RAY_ADDRESS") or running or actors > 1 else "local"
