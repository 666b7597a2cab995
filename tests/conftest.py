"""Shared fixtures: one real Ray cluster per test session, on loopback, and small corpora.

Tests are marked from the fixtures they use (FIXTURE_MARKS): `ray` (the session's Ray cluster),
`train` (Ray Train fine-tuning), `cluster` (several Ray nodes), `labelstudio` (a real Label
Studio server), `browser` (chromium), `demo` (the synthetic world end to end), and `slow`
for any of them. `make test-fast` runs `-m "not slow"`; `make test` runs everything.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SUPPORT = TESTS / "support"  # shared helpers and the model factories configs name ("worlds:colour_net")
sys.path.insert(0, str(SUPPORT))


FIXTURE_MARKS = {
    "ray_cluster": ("ray",),
    "ray_address": ("ray",),
    "cli_env": ("ray",),
    "ray_train": ("ray", "train"),
    "multinode": ("cluster",),
    "on_multinode": ("cluster",),
    "labelstudio": ("labelstudio",),
    "browser": ("browser",),
    "playwright": ("browser",),
    "demo": ("demo",),
}
SLOW = {mark for marks in FIXTURE_MARKS.values() for mark in marks}


def pytest_collection_modifyitems(items) -> None:
    """Mark each test from the fixtures it uses."""
    for item in items:
        marks = {mark for name in getattr(item, "fixturenames", ()) for mark in FIXTURE_MARKS.get(name, ())}
        for mark in sorted(marks):
            item.add_marker(mark)
        if marks & SLOW:
            item.add_marker("slow")


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> dict:
    """A real `ray start --head` cluster bound to 127.0.0.1 (auth disabled for the test).

    Started in its own process group and stopped by killing that group, so it never
    touches another Ray on the machine. Its workers import the tests' own model factories
    (tests/ on PYTHONPATH), as a user's cluster imports theirs.
    """
    import ray

    from network import free_port

    port, dashboard_port = free_port(), free_port()
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="disabled",
        PYTHONPATH=os.pathsep.join([str(SUPPORT), env.get("PYTHONPATH", "")]),
    )
    temp_dir = Path("/tmp") / f"ray-mm-{port}"
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=3",
        "--dashboard-host=127.0.0.1",  # the job server (ray job submit) lives in the dashboard
        f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}",  # not Ray's fixed 52365: other clusters run here too
        f"--ray-client-server-port={free_port()}",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    log = open(tmp_path_factory.mktemp("ray") / "ray-start.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"ray start failed; see {log.name}")
            time.sleep(0.5)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    while True:  # the GCS port opens before the node registers: retry until it has
        try:
            ray.init(address=address, log_to_driver=False)
            break
        except (ConnectionError, RuntimeError):
            if proc.poll() is not None or time.time() > deadline + 60:
                raise
            ray.shutdown()
            time.sleep(1.0)
    yield {"address": address, "dashboard": f"http://127.0.0.1:{dashboard_port}"}
    ray.shutdown()
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="session")
def ray_address(ray_cluster) -> str:
    return ray_cluster["address"]


@pytest.fixture(scope="session")
def ray_train(ray_address) -> str:
    """The session cluster's address, for tests that fine-tune (Ray Train): marked `train`."""
    return ray_address


@pytest.fixture(scope="session")
def playwright():
    """The session's Playwright (its sync API runs one per process): tests that need a browser profile
    on disk take it; the others take `browser`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright):
    """One headless chromium (Debian's) for the session's browser tests, closed at the end."""
    from browser import launch

    instance = launch(playwright)
    yield instance
    instance.close()


@pytest.fixture()
def cli_env(ray_address) -> dict:
    """Environment for `madmine` subprocesses: they drive the session's cluster."""
    env = dict(os.environ)
    env.update(RAY_ADDRESS=ray_address, RAY_AUTH_MODE="disabled", PYTHONPATH=str(SUPPORT))
    return env


@pytest.fixture()
def memory_ceiling():
    """The fuzz tests' guard: an input that makes a decoder allocate gigabytes raises
    MemoryError (which those tests count as a failure) instead of exhausting the machine."""
    from bounded import address_space_ceiling

    with address_space_ceiling():
        yield


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint (moto's server) on 127.0.0.1, stopped at the end of the session."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3_bucket(s3_endpoint, request):
    """A fresh bucket per test; returns (bucket name, s3fs storage options)."""
    import re

    import s3fs

    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(name)
    fs.invalidate_cache()
    return name, options


@pytest.fixture(scope="session")
def faulty_s3(s3_endpoint):
    """One fault-injecting proxy in front of the session's S3 endpoint, shared by the tests that
    need a store that fails; each sets its own fault rate and finds it back at 0 afterwards."""
    from faulty_s3 import FaultyS3Proxy

    proxy = FaultyS3Proxy(s3_endpoint, rate=0.0, slow_s=0.2, seed=31).start()
    yield proxy
    proxy.stop()


@pytest.fixture()
def flaky_store(faulty_s3):
    """The shared proxy, clean at the start and the end of a test."""
    faulty_s3.set(0.0)
    yield faulty_s3
    faulty_s3.set(0.0)
