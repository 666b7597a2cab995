"""Object-store requests that fail now and then: bounded retries with backoff, counted.

A bucket under a cluster's load answers some requests with 503 SlowDown or 500, resets
connections and answers late. Every s3:// filesystem madmine opens (workspace.filesystem)
retries each request in botocore's standard mode: transient statuses (500, 502, 503, 504),
throttling codes and dropped or timed-out connections, at most `max_attempts` attempts per
request, waiting a random time up to 2^attempt seconds (capped at 20 s) between them. s3fs's
own retry loop is switched off, so that bound is the only one. Writes are whole objects, one
PUT each, so a PUT retried after the store applied it writes the same bytes again.

Each retry is counted in this process (`retries()`); scoring and ingest workers report theirs
in their shards' summaries, so a run's summary holds every retry it made. A request still
failing after its last attempt raises; `failure_line(exc)` turns it into the one line the CLI
prints.
"""

from __future__ import annotations

import threading

from botocore.exceptions import BotoCoreError, ClientError

from madmine.errors import MadmineError

DEFAULT_MAX_ATTEMPTS = 5
PROTOCOLS = ("s3", "s3a")
_TRANSIENT_STATUS = (500, 502, 503, 504)
_lock = threading.Lock()
_retries = 0


class StoreUnavailable(MadmineError):
    """A request to the object store failed after its last attempt: the run stops (what it
    committed stays) instead of recording the object as broken."""


def with_retry_policy(options: dict | None, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> dict:
    """s3fs storage options with botocore's standard retries, unless the options set their own."""
    options = dict(options or {})
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("retries", {"total_max_attempts": max_attempts, "mode": "standard"})
    options["config_kwargs"] = config
    return options


def _count(request=None, **_) -> None:
    """botocore's request-created event: an attempt after the first is a retry."""
    attempt = ((getattr(request, "context", None) or {}).get("retries") or {}).get("attempt", 1)
    if attempt > 1:
        global _retries
        with _lock:
            _retries += 1


def watch(fs) -> None:
    """Count `fs`'s retries and leave retrying to botocore (once per client s3fs creates)."""
    fs.retries = 1  # s3fs's loop around botocore's would multiply the bound
    client = fs.s3  # created without a request
    if getattr(fs, "_madmine_watched", None) is not client:
        client.meta.events.register("request-created.s3", _count)
        fs._madmine_watched = client


def retries() -> int:
    """Requests this process retried so far (read before and after a step for its share)."""
    with _lock:
        return _retries


def _store_error(exc: BaseException):
    """The botocore error behind an exception (its cause chain), if the store caused it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code", "")
            transient = status in _TRANSIENT_STATUS or code in ("SlowDown", "Throttling", "ThrottlingException",
                                                                "RequestTimeout", "ServiceUnavailable", "InternalError")
            return exc if transient else None
        if isinstance(exc, BotoCoreError):
            return exc
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "cause", None)  # Ray's task errors hold a cause
    return None


def failure_line(exc: BaseException) -> str | None:
    """One line for a request that failed after its last attempt; None when `exc` is something else."""
    found = _store_error(exc)
    if found is None:
        return None
    if isinstance(found, ClientError):
        error = found.response.get("Error", {})
        meta = found.response.get("ResponseMetadata", {})
        what = f"{error.get('Code', 'error')} (HTTP {meta.get('HTTPStatusCode', '?')}) on {found.operation_name}"
        attempts = meta.get("RetryAttempts")
    else:
        what, attempts = f"{type(found).__name__}: {str(found).splitlines()[0] if str(found) else ''}", None
    tries = f" after {attempts + 1} attempts" if attempts is not None else ""
    return (f"the object store kept failing: {what}{tries}; nothing half-written is visible (files are written "
            "whole, markers last): re-run the command when the store recovers, it goes on from what was committed")


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """A StoreUnavailable for a store failure (to raise from `exc`), else None."""
    if isinstance(exc, StoreUnavailable):
        return exc
    line = failure_line(exc)
    return StoreUnavailable(line) if line else None
