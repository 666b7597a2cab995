"""Running the app: uvicorn on a socket bound first, so the real address (port 0 included)
is known and printed before the first request, and a background variant for scripts.

Binding is where a careless command line fails: a port out of range, a host that does not
resolve or is not this machine's, a port in use. Each is one MadmineError naming the fix.
An address other than loopback serves plain HTTP to the network, which `exposure_warning`
says loudly.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from madmine.errors import MadmineError

LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")
SHUTDOWN_GRACE_S = 10  # a vote is committed in milliseconds: requests running longer are cut off


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str) -> str | None:
    """What to tell the operator when the app would listen beyond this machine (None on loopback)."""
    if is_loopback(host):
        return None
    return (
        f"WARNING: binding {host} serves the rating app over plain HTTP to every machine that can reach this one: "
        "rating tokens and votes cross the network unencrypted. Bind 127.0.0.1 and let a TLS reverse proxy on "
        "this machine forward to it (docs/rating.md, 'Serving raters on other machines'), with --behind-tls."
    )


def bind(host: str, port: int) -> socket.socket:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise MadmineError(f"--port must be within 0..65535 (0 picks a free port), got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise MadmineError(f"cannot bind host {host!r}: {reason}; use an address such as 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise MadmineError(
                f"port {port} on {host} is in use (another server?): pick another with --port, or 0 for any free one"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise MadmineError(f"{host} is not an address of this machine: bind 127.0.0.1 (or one of its own addresses)") from None
        if exc.errno == errno.EACCES:
            raise MadmineError(
                f"no permission to bind port {port} on {host} (ports below 1024 need privileges): use --port 8765"
            ) from None
        raise MadmineError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app: FastAPI, trusted_proxies: str = "127.0.0.1") -> uvicorn.Server:
    # X-Forwarded-Proto (https behind a TLS proxy: the cookie is then Secure) counts only from these addresses
    # SIGTERM stops the server within SHUTDOWN_GRACE_S, even if a request never finishes
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            proxy_headers=True, forwarded_allow_ips=trusted_proxies,
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    return uvicorn.Server(config)


def serve(app: FastAPI, sock: socket.socket, trusted_proxies: str = "127.0.0.1") -> None:
    """Serve until SIGINT/SIGTERM; the lifespan shutdown materialises the ratings table."""
    _server(app, trusted_proxies).run(sockets=[sock])


class BackgroundServer:
    """The app on 127.0.0.1 in a thread, stopped on exit (screenshots, browser tests)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", trusted_proxies: str = "127.0.0.1"):
        self.sock = bind(host, 0)
        self.url = base_url(self.sock)
        self.server = _server(app, trusted_proxies)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the rating server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()
