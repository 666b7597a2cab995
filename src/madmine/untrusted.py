"""The one boundary for untrusted bytes: images, prediction maps, imported masks.

A web corpus holds every kind of broken, hostile or odd file, and a source folder may hold
things that are not files at all (FIFOs, devices, symlink loops). Whatever crosses into
madmine goes through two functions here:

- `read_bytes(uri, ...)`: the bytes of a local regular file or an object, at most
  `max_bytes` of them. A FIFO, a device, a folder, a symlink loop or a file over the limit
  is refused without reading it (a FIFO never blocks, /dev/zero is never read).
- `read_files(fs, paths, ...)`: the same for many small files of one filesystem at once
  (the rating storage's records and vote events).
- `guarded(fn, ...)`: runs a decoder on those bytes with a time limit; any exception it
  raises (a decoder bug, MemoryError, RecursionError, ...) becomes an `ImageError`.
  `guarded_map(fn, items, ...)` does the same for many items on a few threads, each item
  with its own time limit (scoring's decode stage: a batch of images at a time).

Every refusal is an `ImageError(reason, detail)`: `reason` is short and stable (it goes to
the `errors` table's `error` column), `detail` says what and where. Callers record it for
that one item and go on: a run never stops for one input. An object store that fails every
attempt of a request (madmine.objectstore) is no item's fault: `read_bytes` raises
`StoreUnavailable`, `guarded` and `guarded_map` pass it on, and the run stops with what it
committed, instead of recording sound objects as broken.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from dataclasses import dataclass

from madmine import objectstore
from madmine.workspace import filesystem, split_uri

DEFAULT_MAX_BYTES = 256 << 20  # 256 MiB: larger than any photo or scan a segmentation corpus holds
DEFAULT_DECODE_TIMEOUT_S = 30.0  # a 64-megapixel PNG decodes in ~2 s here


@dataclass(frozen=True)
class Limits:
    """What the boundary allows one item: bytes read, pixels decoded, the smallest side, seconds to decode.

    One value for ingest, scoring, evaluation and the rating app, taken from [scoring] (`Limits.of`)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = 64_000_000
    min_side: int = 8
    decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S

    @classmethod
    def of(cls, scoring) -> Limits:
        return cls(scoring.max_bytes, scoring.max_pixels, scoring.min_side, scoring.decode_timeout_s)


class ImageError(ValueError):
    """An input that cannot be used: `reason` is short (a table column), `detail` is free text."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _too_large(where: str, size: int | None, max_bytes: int) -> ImageError:
    how_big = f"{size} bytes" if size is not None else f"more than {max_bytes} bytes"
    return ImageError("file too large", f"{where} is {how_big}, over max_bytes={max_bytes} ([scoring] max_bytes)")


def open_regular(path: str):
    """A binary file object on a local regular file, else ImageError; nothing is read yet.

    The path is checked with stat before it is opened (a device is never opened), opened
    non-blocking (a FIFO swapped in meanwhile cannot block) and checked again with fstat.
    `read_local` reads through it; so does the read-only view of the workspace that
    `madmine sql` queries (madmine.readonly_fs).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError("file not found", f"{path} does not exist") from None
    except OSError as exc:  # ELOOP (a symlink loop), EACCES, ENAMETOOLONG, ...
        raise ImageError("unreadable", f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # an embedded NUL byte
        raise ImageError("unreadable", f"{path!r}: {exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageError("not a regular file", f"{path} is a {_kind(st.st_mode)}; only regular files are read")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageError("file not found", f"{path} disappeared while being read") from None
    except OSError as exc:
        raise ImageError("unreadable", f"{path}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise ImageError("unreadable", f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ImageError("not a regular file", f"{path} is a {_kind(mode)}; only regular files are read")
    return os.fdopen(fd, "rb")


def read_local(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a local regular file of at most `max_bytes`, else ImageError.

    The file is opened by `open_regular` (never a FIFO or a device); reading stops at
    max_bytes + 1 whatever the file claims.
    """
    with open_regular(path) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise _too_large(path, size, max_bytes)
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise ImageError("unreadable", f"{path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # it grew after the stat
        raise _too_large(path, None, max_bytes)
    return data


def read_bytes(uri: str, storage_options: dict | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes behind a local path or an object-store URI, at most `max_bytes`, else ImageError.

    Objects are read with one ranged GET of max_bytes + 1 bytes: one request per object, as
    before, and never more than the limit in memory.
    """
    protocol, path = split_uri(uri)
    if protocol in ("file", "local"):
        return read_local(path, max_bytes)
    try:
        data = filesystem(uri, storage_options).cat_file(path, start=0, end=max_bytes + 1)
    except Exception as exc:  # noqa: BLE001 - any client error is this item's error, never the run's
        data = exc
    return _object_bytes(uri, data, max_bytes)


def read_files(fs, paths: list[str], *, local: bool, max_bytes: int) -> dict[str, bytes | ImageError]:
    """path -> the file's bytes (at most `max_bytes`) or the ImageError that refused it, for many
    files of one filesystem (a workspace's `fs`): small storage files such as vote events.

    Local files go through `read_local` one by one (a FIFO never blocks, /dev/zero is never
    read); objects are fetched concurrently, each with one ranged GET of max_bytes + 1 bytes.
    """
    if local:
        out: dict[str, bytes | ImageError] = {}
        for path in paths:
            try:
                out[path] = read_local(path, max_bytes)
            except ImageError as exc:
                out[path] = exc
        return out
    if not paths:
        return {}
    blobs = fs.cat_ranges(list(paths), 0, max_bytes + 1, on_error="return")
    out = {}
    for path, blob in zip(paths, blobs):
        try:
            out[path] = _object_bytes(path, blob, max_bytes)
        except ImageError as exc:
            out[path] = exc
    return out


def _object_bytes(uri: str, data, max_bytes: int) -> bytes:
    """What a ranged GET of max_bytes + 1 bytes gave (bytes or the exception it raised), checked."""
    if isinstance(data, FileNotFoundError):
        raise ImageError("file not found", f"{uri} does not exist")
    if isinstance(data, IsADirectoryError):
        raise ImageError("not a regular file", f"{uri} is a folder")
    if isinstance(data, BaseException):
        text = str(data)
        if "InvalidRange" in text or "not satisfiable" in text.lower():  # a ranged GET of an empty object (416)
            return b""
        down = objectstore.unavailable(data) if isinstance(data, Exception) else None
        if down is not None:  # the store, not the object, failed every attempt: the run stops, the object is not "broken"
            raise down from data
        raise ImageError("unreadable", f"{uri}: {type(data).__name__}: {data}")
    if len(data) > max_bytes:
        raise _too_large(uri, None, max_bytes)
    return data


def guarded(fn, *args, timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S, what: str = "decode", **kwargs):
    """fn(*args, **kwargs) with a time limit; any exception but ImageError becomes one.

    The call runs in one of a few reusable daemon threads, so that a decoder caught in a
    pathological loop is abandoned after `timeout_s`: its thread ends with the decoder and a
    fresh one serves the next call (Pillow's decoders release the GIL, so it does not stall
    the caller). Reusing the threads keeps the limit cheap: starting a thread per image cost
    as much as decoding a small JPEG. `timeout_s=None` runs it in this thread.
    """
    if timeout_s is None:
        return _call(fn, args, kwargs, what)
    job = _Job(fn, args, kwargs, what)
    _GuardThread.take().inbox.put(job)
    if not job.done.wait(timeout_s):
        with _GUARD_LOCK:
            job.abandoned = True
        if not job.done.is_set():
            raise ImageError(f"{what} timed out", f"took more than {timeout_s:g} s ([scoring] decode_timeout_s)")
    ok, value = job.outcome
    if ok:
        return value
    raise value


class _Job:
    def __init__(self, fn, args, kwargs, what: str):
        self.fn, self.args, self.kwargs, self.what = fn, args, kwargs, what
        self.done = threading.Event()
        self.abandoned = False
        self.outcome: tuple = (False, None)

    def run(self) -> None:
        try:
            self.outcome = (True, _call(self.fn, self.args, self.kwargs, self.what))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by guarded
            self.outcome = (False, exc)


_GUARD_LOCK = threading.Lock()
_IDLE_GUARDS: list[_GuardThread] = []


def _forget_guards_after_fork() -> None:
    """A forked child (a DataLoader worker) has none of its parent's threads: start afresh."""
    global _GUARD_LOCK
    _GUARD_LOCK = threading.Lock()
    _IDLE_GUARDS.clear()


os.register_at_fork(after_in_child=_forget_guards_after_fork)


class _GuardThread(threading.Thread):
    """Runs guarded calls one at a time; goes back to the idle list after each, unless its
    caller gave up waiting (then it ends when the call does)."""

    def __init__(self):
        super().__init__(name="madmine-guard", daemon=True)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.start()

    @classmethod
    def take(cls) -> _GuardThread:
        with _GUARD_LOCK:
            if _IDLE_GUARDS:
                return _IDLE_GUARDS.pop()
        return cls()

    def run(self) -> None:
        while True:
            job = self.inbox.get()
            job.run()
            with _GUARD_LOCK:
                if job.abandoned:
                    return
                _IDLE_GUARDS.append(self)
            job.done.set()


def _call(fn, args, kwargs, what: str):
    try:
        return fn(*args, **kwargs)
    except (ImageError, objectstore.StoreUnavailable):  # an outage of the store is no item's fault
        raise
    except MemoryError:
        raise ImageError("too large to decode", f"out of memory while running {what}") from None
    except RecursionError:
        raise ImageError(f"{what} failed", "nested too deeply (RecursionError)") from None
    except Exception as exc:  # noqa: BLE001 - the boundary: any decoder failure is this item's error
        raise ImageError(f"{what} failed", f"{type(exc).__name__}: {exc}"[:500]) from None


def guarded_map(fn, items, *, threads: int = 4, timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
                what: str = "decode") -> list:
    """[fn(item), or the ImageError it became] for every item, in order, each item within `timeout_s`.

    Up to `threads` guard threads take items one after another from a shared list; the caller
    sleeps until the oldest item in flight would pass its limit (or every item is done), so a
    batch costs no hand-off per item: handing each image to a guard thread one by one cost as
    much as decoding a small JPEG (100 of 360 us for a 96x96 one). An item past its limit
    gets "<what> timed out"; its thread is abandoned (it ends when the call does) and a fresh
    one carries on with the rest.
    """
    items = list(items)
    if timeout_s is None or not items:
        return _unless_store_down([_outcome(fn, item, what) for item in items])
    share = _Share(fn, items, what)
    with share.cond:
        for _ in range(max(1, min(threads, len(items)))):
            share.start_worker()
        while share.remaining:
            now = time.monotonic()
            for worker in share.late(now, timeout_s):
                share.finish(worker.current, ImageError(
                    f"{what} timed out", f"took more than {timeout_s:g} s ([scoring] decode_timeout_s)"), worker)
                worker.abandoned = True
                share.start_worker()
            if share.remaining:
                share.cond.wait(timeout=max(0.01, share.next_deadline(now, timeout_s) - now))
    return _unless_store_down(share.results)


def _unless_store_down(results: list) -> list:
    """The results, unless the object store failed for one of the items: then that error."""
    for result in results:
        if isinstance(result, objectstore.StoreUnavailable):
            raise result
    return results


def _outcome(fn, item, what: str):
    try:
        return _call(fn, (item,), {}, what)
    except (ImageError, objectstore.StoreUnavailable) as exc:
        return exc


class _Share:
    """The items of one guarded_map call, their results, and the workers taking them."""

    def __init__(self, fn, items: list, what: str):
        self.fn, self.items, self.what = fn, items, what
        self.results: list = [None] * len(items)
        self.remaining = len(items)
        self.taken = 0
        self.workers: list[_MapWorker] = []
        self.cond = threading.Condition()

    def start_worker(self) -> None:
        worker = _MapWorker(self)
        self.workers.append(worker)
        _GuardThread.take().inbox.put(worker)

    def finish(self, index: int, value, worker: _MapWorker) -> None:
        self.results[index] = value
        self.remaining -= 1
        worker.current = None
        if not self.remaining:
            self.cond.notify_all()

    def late(self, now: float, timeout_s: float) -> list[_MapWorker]:
        return [w for w in self.workers if w.current is not None and not w.abandoned and now - w.started >= timeout_s]

    def next_deadline(self, now: float, timeout_s: float) -> float:
        busy = [w.started for w in self.workers if w.current is not None and not w.abandoned]
        return (min(busy) if busy else now) + timeout_s


class _MapWorker:
    """A guard thread's job in guarded_map: take the next item, run fn on it, until none is left."""

    def __init__(self, share: _Share):
        self.share = share
        self.abandoned = False
        self.current: int | None = None
        self.started = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        share = self.share
        while True:
            with share.cond:
                if self.abandoned or share.taken >= len(share.items):
                    return
                self.current, self.started = share.taken, time.monotonic()
                share.taken += 1
            value = _outcome(share.fn, share.items[self.current], share.what)
            with share.cond:
                if self.abandoned:  # the caller gave this item its timeout error and went on
                    return
                share.finish(self.current, value, self)
