"""The workspace as `madmine sql` sees it: read-only, and nothing outside it.

DuckDB's own settings can confine a connection to some folders, but a folder it may read
it may also write (COPY ... TO, ATTACH, EXPORT DATABASE). So the query connection gets no
folder at all: it reaches the workspace only through this fsspec filesystem, registered
under its own protocol (`madmine://`), which opens files for reading and nothing else,
refuses any path outside the workspace root (`..` included), and opens local files through
the untrusted-bytes boundary (a FIFO, a device or a symlink out of the workspace is never
opened). Local and s3:// workspaces look the same to SQL.
"""

from __future__ import annotations

import os
import posixpath
import threading

from fsspec import AbstractFileSystem

from madmine.untrusted import ImageError, open_regular
from madmine.workspace import Workspace

PROTOCOL = "madmine"


class ReadOnlyWorkspaceFS(AbstractFileSystem):
    """Read-only access to one workspace's files, under `madmine://<workspace root>`."""

    protocol = (PROTOCOL,)
    cachable = False  # one instance per workspace, never shared through fsspec's instance cache

    def __init__(self, ws: Workspace):
        super().__init__()
        self.ws = ws
        self.target = ws.fs
        self.root = ws.root
        self.real_root = os.path.realpath(ws.root) if ws.is_local else None

    @property
    def root_url(self) -> str:
        """What SQL names the workspace root: madmine:///abs/folder or madmine://bucket/prefix."""
        return f"{PROTOCOL}://{self.root}"

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3:]
        return path.rstrip("/") or "/"

    def _inside(self, path: str) -> str:
        """The path without protocol, normalised; PermissionError when it leaves the workspace."""
        path = self._strip_protocol(path)
        normal = posixpath.normpath(path)
        if path.startswith("/") and normal.startswith("//"):
            normal = "/" + normal.lstrip("/")
        if normal != self.root and not normal.startswith(self.root + "/"):
            raise PermissionError(f"{path} is outside the workspace {self.ws.uri}: madmine sql reads the workspace only")
        return normal

    # ---- reading -------------------------------------------------------------------------
    def ls(self, path, detail=True, **kwargs):
        return self.target.ls(self._inside(path), detail=detail, **kwargs)

    def info(self, path, **kwargs):
        return self.target.info(self._inside(path), **kwargs)

    def modified(self, path):
        return self.target.modified(self._inside(path))

    def glob(self, path, maxdepth=None, **kwargs):
        pattern = self._inside(path)
        return [p for p in self.target.glob(pattern, maxdepth=maxdepth, **kwargs) if self._is_inside(p)]

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        found = self.target.find(self._inside(path), maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        if detail:
            return {p: v for p, v in found.items() if self._is_inside(p)}
        return [p for p in found if self._is_inside(p)]

    def _is_inside(self, path: str) -> bool:
        try:
            self._inside(path)
        except PermissionError:
            return False
        return True

    def _open(self, path, mode="rb", **kwargs):
        if mode != "rb":
            raise PermissionError(f"{self._strip_protocol(path)}: madmine sql is read-only and writes no file")
        path = self._inside(path)
        if not self.ws.is_local:
            return PositionPerThread(self.target.open(path, "rb", **kwargs))
        real = os.path.realpath(path)
        if real != self.real_root and not real.startswith(self.real_root + os.sep):
            raise PermissionError(f"{path} leads outside the workspace (to {real}): madmine sql reads the workspace only")
        try:
            return PositionPerThread(open_regular(path))
        except ImageError as exc:
            raise PermissionError(f"{exc.detail or exc}") from None

    # ---- writing: refused ----------------------------------------------------------------
    def _refuse(self, path="", *args, **kwargs):
        raise PermissionError(f"{self._strip_protocol(path)}: madmine sql is read-only and changes no file")

    mkdir = makedirs = rmdir = rm = rm_file = _rm = touch = pipe_file = put_file = _refuse

    def mv(self, path1, path2, *args, **kwargs):
        self._refuse(path2)

    def cp_file(self, path1, path2, **kwargs):
        self._refuse(path2)

    def copy(self, path1, path2, *args, **kwargs):
        self._refuse(path2)


class PositionPerThread:
    """A read-only file whose position belongs to each thread.

    DuckDB reads one file from several threads at once, and through an fsspec filesystem it
    does so as seek(offset) then read(n), two calls: with one shared position another
    thread's seek can land in between, and a Parquet reader then gets the wrong bytes ("Out of
    buffer"). Here each thread keeps its own position, and every read seeks and reads under
    one lock.
    """

    def __init__(self, raw):
        self.raw = raw
        self._lock = threading.Lock()
        self._local = threading.local()
        self.size = self._size()

    def _size(self) -> int:
        size = getattr(self.raw, "size", None)
        if isinstance(size, int):
            return size
        with self._lock:
            end = self.raw.seek(0, os.SEEK_END)
            self.raw.seek(0)
        return end

    def tell(self) -> int:
        return getattr(self._local, "position", 0)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.tell(), os.SEEK_END: self.size}[whence]
        self._local.position = max(0, base + offset)
        return self._local.position

    def read(self, n: int = -1) -> bytes:
        with self._lock:
            self.raw.seek(self.tell())
            data = self.raw.read(n)
        self._local.position = self.tell() + len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.raw.close()

    @property
    def closed(self) -> bool:
        return self.raw.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
