"""Reaching Ray: the cluster at an address (or RAY_ADDRESS), else an embedded local one.

Used by the executors, fine-tuning and the demo; the rest of madmine never imports Ray.
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402  (after the environment that keeps an embedded Ray on loopback)

from madmine.errors import MadmineError  # noqa: E402

LOCAL_START_ATTEMPTS = 3
RAY_LOGGERS = ("ray", "ray.data", "ray.tune", "ray.train", "ray.air")


def ray_log_level() -> int:
    """Ray's own INFO and WARNING lines (cluster start, dataset plans, Tune's state files) are not
    madmine's progress: they stay in Ray's log files unless madmine logs at DEBUG (--verbose)."""
    return logging.INFO if logging.getLogger().isEnabledFor(logging.DEBUG) else logging.ERROR


def quiet_logs() -> None:
    """Apply ray_log_level to Ray's loggers. Ray Data and Tune re-apply their logging config when
    first imported: their importers call this again."""
    for name in RAY_LOGGERS:
        logging.getLogger(name).setLevel(ray_log_level())


quiet_logs()


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to the cluster at `address` (or RAY_ADDRESS), else start an embedded local one."""
    quiet_logs()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=ray_log_level())
        else:
            _start_local(num_cpus)
    except Exception as exc:  # Ray raises a bare Exception when its node starts too slowly
        where = f"the Ray cluster at {address}" if address else "an embedded local Ray"
        raise MadmineError(
            f"could not reach {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
            "check the address (--ray-address or RAY_ADDRESS) and that the cluster is up, or retry when the machine is less busy"
        ) from exc


def _start_local(num_cpus: int | None, attempts: int = LOCAL_START_ATTEMPTS) -> None:
    """Start the embedded Ray, again if its node missed Ray's fixed 30 s to register (a busy laptop)."""
    for attempt in range(attempts):
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level=ray_log_level())
            return
        except Exception:
            ray.shutdown()
            if attempt == attempts - 1:
                raise
