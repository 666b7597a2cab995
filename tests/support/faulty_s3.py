"""A fault-injecting HTTP proxy on 127.0.0.1 in front of moto's S3 server.

A real bucket under a cluster's load answers some requests with 503 SlowDown or 500, drops
connections and answers slowly. This proxy does the same to a share of the requests it
forwards (`rate`), picking one of the faults in `kinds` for each:

  slowdown  503 SlowDown, the request never reaches the store
  error     500 InternalError; for GET, HEAD, PUT and DELETE after the store applied it
            (the client cannot know whether a write happened: it must be idempotent)
  reset     the connection is reset (RST); for idempotent methods after the store applied it
  slow      the answer comes `slow_s` seconds late

Every client of the endpoint (s3fs in tests, `madmine` subprocesses, Ray workers) goes through
it. `faults` counts what was injected, by kind; `requests` counts every request received.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = ("slowdown", "error", "reset", "slow")
IDEMPOTENT = ("GET", "HEAD", "PUT", "DELETE")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}
_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "error": (500, "InternalError", "We encountered an internal error. Please try again."),
}


class FaultyS3Proxy:
    """`FaultyS3Proxy(upstream).start()`; `endpoint` is its URL; `set(rate, kinds)` at any time."""

    def __init__(self, upstream: str, rate: float = 0.0, kinds=KINDS, slow_s: float = 0.3, seed: int = 0):
        host, port = upstream.removeprefix("http://").rstrip("/").split(":")
        self.upstream = (host, int(port))
        self.slow_s = slow_s
        self.requests: Counter = Counter()
        self.faults: Counter = Counter()
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.set(rate, kinds)
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-s3", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultyS3Proxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def set(self, rate: float, kinds=KINDS) -> None:
        """Fail this share of the requests from now on, with one of `kinds` each."""
        unknown = set(kinds) - set(KINDS)
        if unknown or not 0 <= rate <= 1:
            raise ValueError(f"rate must be within [0, 1] and kinds among {KINDS}, got {rate}, {kinds}")
        with self._lock:
            self.rate, self.kinds = rate, tuple(kinds)

    def draw(self, method: str) -> str | None:
        """The fault for the next request, or None; counted."""
        with self._lock:
            self.requests[method] += 1
            if not self.kinds or self._random.random() >= self.rate:
                return None
            kind = self._random.choice(self.kinds)
            self.faults[kind] += 1
            return kind

    def total_faults(self) -> int:
        with self._lock:
            return sum(self.faults.values())

    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
    owner: FaultyS3Proxy
    upstream_conn: http.client.HTTPConnection | None = None

    def log_message(self, *args) -> None:  # one line per request would drown test output
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        for attempt in range(2):  # a kept-alive upstream connection may have been closed by moto
            if self.upstream_conn is None:
                self.upstream_conn = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
            try:
                self.upstream_conn.request(self.command, self.path, body=body, headers=headers)
                response = self.upstream_conn.getresponse()
                data = response.read()
                return response.status, [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP], data
            except (ConnectionError, http.client.HTTPException, OSError):
                self.upstream_conn.close()
                self.upstream_conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _reset(self) -> None:
        """Drop the connection with a TCP reset, as an overloaded front end does."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.connection.close()

    def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        length = str(len(data))
        for key, value in headers:
            if key.lower() == "content-length" and self.command == "HEAD":
                length = value  # the object's size, which a HEAD answer states without the body
            elif key.lower() not in ("content-length", "date", "server"):
                self.send_header(key, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, kind: str) -> None:
        status, code, message = _ERRORS[kind]
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
               f"<RequestId>faulty-s3</RequestId></Error>").encode()
        self._reply(status, [("Content-Type", "application/xml")], xml)

    def _handle(self) -> None:
        body = self._body()
        fault = self.owner.draw(self.command)
        after = self.command in IDEMPOTENT
        if fault == "slowdown" or (fault in ("error", "reset") and not after):
            if fault == "reset":
                self._reset()
            else:
                self._error(fault)
            return
        if fault == "slow":
            time.sleep(self.owner.slow_s)
        status, headers, data = self._forward(body)
        if fault == "error":
            self._error("error")
        elif fault == "reset":
            self._reset()
        else:
            self._reply(status, headers, data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle
