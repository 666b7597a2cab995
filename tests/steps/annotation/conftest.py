"""One real Label Studio server for the annotation tests that talk to one (session-scoped,
on 127.0.0.1, its own data dir; stopped at the end even when a test fails)."""

from __future__ import annotations

import pytest

import labelstudio_server


@pytest.fixture(scope="session")
def labelstudio(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("labelstudio")
    server = labelstudio_server.start(workdir, workdir / "files")
    try:
        yield server
    finally:
        server.stop()
