"""The rating storage behind the untrusted-bytes boundary: whatever sits in rating/raters/ and
rating/events/ (FIFOs, devices, symlinks to them, loops, folders, garbage, huge files), the
valid records and events are read exactly, every other file is skipped and reported, nothing
blocks or reads without bound, and the rating app keeps answering and stops on SIGTERM.

What a regression would do (hang on a FIFO, read /dev/zero until memory runs out) happens in
a child process with a time and memory limit, so that it fails the test instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import bounded
import rating_world
from madmine.steps.rating import store
from madmine.steps.rating.tokens import add_rater
from storage_fuzz import plant, unblock

PROPERTY = """
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from madmine.steps.rating import store, tokens
from madmine.steps.rating.tokens import RaterError, RaterRegistry
from madmine.workspace import Workspace
from storage_fuzz import KINDS, event_bytes, plant, unblock

names = st.from_regex(r"[a-z][a-z0-9]{{0,7}}", fullmatch=True)
kinds = st.sampled_from(("valid",) + KINDS)
runs = 0


# health checks time data generation: on a loaded machine they fail for reasons of no interest here
@settings(max_examples={examples}, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(raters=st.dictionaries(names, kinds, min_size=1, max_size=6),
       events=st.lists(st.tuples(names, kinds, st.one_of(st.none(), st.integers(1, 5))), max_size=12),
       garbage=st.binary(min_size=1, max_size=300))
def storage_is_read_exactly(raters, events, garbage):
    global runs
    root = Path(tempfile.mkdtemp())
    planted = []
    try:
        ws = Workspace(str(root / "work"))
        valid, hostile_records = {{}}, set()
        for name, kind in raters.items():
            if kind == "valid":
                valid[name] = tokens.add_rater(ws, name)
            else:
                path = root / "work" / "rating" / "raters" / f"{{name}}.json"
                plant(kind, path, garbage=garbage, outside=root)
                planted.append(path)
                hostile_records.add(str(path))
        valid_events, hostile_events = set(), set()
        for i, (rater, kind, score) in enumerate(events):
            stamp = f"2026-01-01T00:00:{{i:02d}}+00:00"
            path = root / "work" / "rating" / "events" / "round-0" / rater / f"20260101T0000{{i:02d}}000000Z-{{i:04d}}.json"
            if kind == "valid":
                plant("valid", path, valid=event_bytes(0, f"img{{i}}", rater, score, stamp, f"e{{i}}"))
                valid_events.add(f"e{{i}}")
            else:
                plant(kind, path, garbage=garbage, valid=b"{{}}", outside=root)
                planted.append(path)
                hostile_events.add(str(path))

        problems = []
        loaded = store.load_events(ws, 0, problems=problems)
        assert {{e["event_id"] for e in loaded}} == valid_events, (loaded, valid_events)
        assert len(loaded) == len(valid_events)
        assert {{p.path for p in problems}} == hostile_events and len(problems) == len(hostile_events), problems

        records, skipped = tokens.scan(ws)
        assert set(records) == set(valid), (records, valid)
        assert {{p.path for p in skipped}} == hostile_records and len(skipped) == len(hostile_records), skipped
        assert tokens.list_raters(ws) == sorted(valid)

        registry = RaterRegistry(ws)
        for name, token in valid.items():
            assert registry.lookup(token) == name
            assert registry.lookup(token[:-2] + "AA") is None
        assert registry.lookup("x" * 43) is None  # a token without a name: every record is read
        for path in hostile_records:
            assert registry.lookup(Path(path).stem + ".secret") is None
        try:
            tokens.revoke(ws, "nobody")
            raise AssertionError("revoked nobody")
        except RaterError as exc:
            assert str(exc).endswith("(raters: " + (", ".join(sorted(valid)) or "none") + ")"), exc
        runs += 1
    finally:
        unblock(planted)
        shutil.rmtree(root, ignore_errors=True)


storage_is_read_exactly()
print("examples", runs)
"""


def test_the_storage_reads_valid_files_exactly_and_skips_every_hostile_one():
    examples = 120
    result = bounded.python(PROPERTY.format(examples=examples), timeout=300, memory=3 << 30)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert result.stdout.split() == ["examples", str(examples)], result.stdout


def test_each_hostile_kind_gets_its_own_reason(tmp_path):
    """One of each, with the reason `rate status` shows for it."""
    world = rating_world.build(tmp_path / "w")
    add_rater(world.ws, "alice")
    folder = world.root / "work" / "rating" / "events" / "round-0" / "alice"
    expected = {
        "fifo": "is a FIFO (named pipe); only regular files are read",
        "dev_zero": "is a character device; only regular files are read",
        "folder": "is a folder; only regular files are read",
        "loop": "unreadable",
        "dangling": "file not found",
        "huge": f"over max_bytes={store.MAX_EVENT_BYTES}",
        "garbage": "not JSON",
        "empty": "empty file",
    }
    paths = {kind: folder / f"20260101T000000000000Z-{kind}.json" for kind in expected}
    for kind, path in paths.items():
        plant(kind, path)
    try:
        problems = []
        result = bounded.python(
            f"""
            import json
            from madmine.steps.rating import store
            from madmine.workspace import Workspace
            problems = []
            store.load_events(Workspace({str(world.root / 'work')!r}), 0, problems=problems)
            print(json.dumps({{p.path: p.reason for p in problems}}))
            """,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        problems = json.loads(result.stdout)
    finally:
        unblock(paths.values())
    assert set(problems) == {str(p) for p in paths.values()}
    for kind, reason in expected.items():
        assert reason in problems[str(paths[kind])], (kind, problems[str(paths[kind])])


# ---- the running app -----------------------------------------------------------------------------


def _start(world) -> tuple[subprocess.Popen, str]:
    cli = Path(sys.executable).with_name("madmine")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [str(cli), "--config", str(world.config_path), "rate", "serve", "--round", "0", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if " at http://" in line:
            return proc, line.split(" at ", 1)[1].strip().rstrip("/")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    raise AssertionError("`madmine rate serve` did not start")


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def test_the_app_stays_responsive_and_stops_on_sigterm_with_hostile_storage(tmp_path):
    """A FIFO among the rater records, and a FIFO and a symlink to /dev/zero among a rater's
    events, under 45 concurrent requests whose token has no '.' (each reads every record)
    plus the rater's own: every request is answered, /healthz too, memory stays flat, and
    SIGTERM stops the server."""
    world = rating_world.build(tmp_path / "w")
    alice = add_rater(world.ws, "alice")
    work = world.root / "work"
    store.record(world.ws, 0, world.image_ids[0], "alice", 4)
    hostile = [work / "rating" / "raters" / "mallory.json",
               work / "rating" / "events" / "round-0" / "alice" / "20260101T000000000000Z-fifo.json",
               work / "rating" / "events" / "round-0" / "alice" / "20260101T000000000001Z-zero.json"]
    plant("fifo", hostile[0])
    plant("fifo", hostile[1])
    plant("dev_zero", hostile[2])
    proc, url = _start(world)
    try:
        def ask(k: int) -> int:
            with httpx.Client(base_url=url, timeout=20) as client:
                if k % 3 == 0:
                    return client.get("/api/session", headers={"Authorization": f"Bearer {alice}"}).status_code
                return client.get("/api/session", headers={"Authorization": f"Bearer {'x' * 43}{k}"}).status_code

        with ThreadPoolExecutor(max_workers=48) as pool:
            codes = list(pool.map(ask, range(60)))
        assert codes.count(200) == 20 and codes.count(403) == 40, codes
        with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {alice}"}) as client:
            assert client.get("/healthz").json() == {"ok": True}
            session = client.get("/api/session").json()
            assert session["done"] == 1  # the valid vote, and nothing from the FIFO or /dev/zero
            image = client.get(f"/api/items/{session['resume']}").json()["image_id"]
            assert client.post("/api/ratings", json={"image_id": image, "score": 2}).status_code == 200
        assert _rss_bytes(proc.pid) < 1 << 30
        status = bounded.madmine("--config", str(world.config_path), "rate", "status", "--json", timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert {p["rater"]: p["rated"] for p in report["progress"]} == {"alice": 2}
        assert {item["path"] for item in report["skipped_files"]} == {str(p) for p in hostile}
        table = work / "tables" / "ratings" / "round-0.parquet"
        table.unlink()  # `rate status` wrote it: the server's shutdown must write it again
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn exits by re-raising the signal it got
        assert table.exists()
    finally:
        unblock(hostile)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "garbage"])
def test_rate_revoke_of_an_unknown_name_lists_only_real_raters(tmp_path, kind):
    world = rating_world.build(tmp_path / "w")
    add_rater(world.ws, "alice")
    junk = world.root / "work" / "rating" / "raters" / "junk.json"
    plant(kind, junk)
    try:
        result = bounded.madmine("--config", str(world.config_path), "rate", "revoke", "nobody", timeout=90)
    finally:
        unblock([junk])
    line = bounded.one_line_error(result)
    assert line.endswith("no rater named 'nobody' (raters: alice)"), line
