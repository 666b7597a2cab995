"""Reaching Ray: the cluster at an address (or RAY_ADDRESS), else an embedded local one.

Used by the executors, fine-tuning and the demo; the rest of madmine never imports Ray.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402  (after the environment that keeps an embedded Ray on loopback)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to the cluster at `address` (or RAY_ADDRESS), else start an embedded local one."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
