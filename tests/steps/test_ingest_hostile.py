"""Ingest against hostile sources: no file stops it, no file hangs it, and its exit code tells
the truth. Anything that could hang or eat memory runs in a bounded child process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bounded
from fuzz_corpus import corrupt_idat_png
from madmine import tables
from madmine.steps.ingest import ingest
from madmine.untrusted import Limits
from madmine.workspace import Workspace
from worlds import write_corpus

CONFIG = """
[workspace]
uri = "work/"

[classes]
names = ["background", "a"]

[[models]]
name = "t"
role = "target"
maps = "maps/"

[[models]]
name = "c"
role = "competitor"
maps = "maps/"
"""


def test_a_png_with_corrupt_image_data_is_an_error_row_and_the_ingest_goes_on(tmp_path):
    ws = Workspace(str(tmp_path / "ws"))
    good = write_corpus(tmp_path / "corpus", 3)
    (tmp_path / "corpus" / "broken.png").write_bytes(corrupt_idat_png())
    result = ingest(ws, [str(tmp_path / "corpus")], show_progress=False)
    assert result.added == len(good)
    assert [(Path(e["uri"]).name, e["error"]) for e in result.errors] == [("broken.png", "truncated or corrupt image data")]
    assert result.errors[0]["image_id"] is not None  # the bytes were read: the row names them
    assert tables.ERRORS.read(ws).column("error").to_pylist() == ["truncated or corrupt image data"]


@pytest.fixture
def hostile_folder(tmp_path):
    """Good images next to a FIFO, /dev/zero and a symlink loop, all named *.png."""
    folder = tmp_path / "corpus"
    good = write_corpus(folder, 3)
    fifo = folder / "pipe.png"
    os.mkfifo(fifo)
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    yield folder, good
    try:  # unblock a reader a regression left waiting on the FIFO, so nothing hangs after the test
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def test_fifos_devices_and_symlink_loops_are_refused_unread(tmp_path, hostile_folder):
    folder, good = hostile_folder
    result = bounded.python(
        f"""
        import json
        from madmine.steps.ingest import ingest
        from madmine.workspace import Workspace
        r = ingest(Workspace({str(tmp_path / "ws")!r}), [{str(folder)!r}], show_progress=False)
        print(json.dumps({{"added": r.added, "errors": {{e["uri"]: e["error"] for e in r.errors}}}}))
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["added"] == len(good)
    assert got["errors"] == {
        str(folder / "pipe.png"): "not a regular file",
        str(folder / "zero.png"): "not a regular file",
        str(folder / "loop.png"): "unreadable",
    }


def test_files_over_max_bytes_are_refused_unread(tmp_path, monkeypatch):
    ws = Workspace(str(tmp_path / "ws"))
    good = write_corpus(tmp_path / "corpus", 2)
    big = tmp_path / "corpus" / "big.png"
    Image.fromarray((np.random.default_rng(1).random((300, 300, 3)) * 255).astype(np.uint8)).save(big)
    assert big.stat().st_size > 100_000 > max(p.stat().st_size for p in good)
    result = ingest(ws, [str(tmp_path / "corpus")], show_progress=False, limits=Limits(max_bytes=100_000))
    assert result.added == len(good)
    assert [(e["uri"], e["error"]) for e in result.errors] == [(str(big), "file too large")]
    assert "over max_bytes=100000" in result.errors[0]["detail"]


@pytest.fixture
def project(tmp_path):
    (tmp_path / "madmine.toml").write_text(CONFIG)
    (tmp_path / "maps").mkdir()
    write_corpus(tmp_path / "good", 4)
    return tmp_path


def test_a_missing_source_or_a_symlink_loop_exits_non_zero_with_the_summary(project):
    ok = bounded.madmine("ingest", "good", cwd=project)
    assert ok.returncode == 0, ok.stderr
    assert "4 new images" in ok.stderr

    (project / "loop").symlink_to(project / "loop")
    for source in ("/nonexistent", "loop"):
        result = bounded.madmine("ingest", "good", source, cwd=project)
        line = bounded.one_line_error(result)
        assert "1 source(s) not found or unreadable" in line and source in line
        assert "0 new images, 0 duplicates, 4 already known, 1 errors" in result.stderr  # the summary first


def test_more_failures_than_the_error_budget_exit_non_zero(project):
    (project / "bad").mkdir()
    write_corpus(project / "bad", 3)
    for k in range(2):
        (project / "bad" / f"broken{k}.png").write_bytes(corrupt_idat_png(k))
    result = bounded.madmine("ingest", "bad", cwd=project)  # 2 of 5 failed: 40% > 5%
    line = bounded.one_line_error(result)
    assert "2 of 5 files failed (40.0%), above max_error_fraction=5.0%" in line
    assert "3 new images" in result.stderr
    (project / "more").mkdir()
    write_corpus(project / "more", 2, seed=5)
    (project / "more" / "broken.png").write_bytes(corrupt_idat_png(9))
    relaxed = bounded.madmine("ingest", "more", "--max-error-fraction", "0.5", cwd=project)
    assert relaxed.returncode == 0, relaxed.stderr


def test_zero_workers_is_a_one_line_error(project):
    line = bounded.one_line_error(bounded.madmine("ingest", "good", "--workers", "0", cwd=project))
    assert "--workers must be at least 1, got 0" in line


def test_ingest_of_dev_zero_is_refused_unread(project):
    """`ingest /dev/zero` once read until MemoryError; now one error row and exit 2 (1 of 1 failed)."""
    result = bounded.madmine("ingest", "/dev/zero", cwd=project, timeout=60)  # reading it all would pass any limit
    line = bounded.one_line_error(result)
    assert "1 of 1 files failed" in line
    assert "not a regular file: /dev/zero" in result.stderr
