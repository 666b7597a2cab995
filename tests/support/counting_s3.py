"""moto's S3 server on 127.0.0.1 that counts the requests it answers, by method.

Tests and benchmarks read `requests` before and after a step: on an object store a request
costs a round trip, so storage that thinks in shards shows it here."""

from __future__ import annotations

import threading
from collections import Counter

from moto.server import DomainDispatcherApplication, MotoRequestHandler, ThreadedMotoServer, create_backend_app
from werkzeug.serving import make_server


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # one line per request would drown the benchmark's figures
        pass


class CountingS3Server(ThreadedMotoServer):
    def __init__(self):
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.requests: Counter = Counter()
        self._lock = threading.Lock()

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)

        def counted(environ, start_response):
            with self._lock:
                self.requests[environ.get("REQUEST_METHOD", "?")] += 1
            return app(environ, start_response)

        self._server = make_server("127.0.0.1", 0, counted, True, request_handler=_QuietHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def total(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def snapshot(self) -> Counter:
        with self._lock:
            return Counter(self.requests)
