"""The rating app against hostile requests, broken storage and careless command lines: every
request gets a 4xx (never a 500 or an echo of what was sent), one bad file never breaks the
others, links and revocations take effect at once everywhere, and every `rate` failure is one
line with exit code 2. Servers bind 127.0.0.1 only and stop with the test."""

from __future__ import annotations

import errno
import json
import socket

import httpx
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import rating_world
from madmine import tables
from madmine.cli import app as cli_app
from madmine.cli import main as cli_main
from madmine.cli import state as cli_state
from madmine.steps.rating import store
from madmine.steps.rating.app import create_app
from madmine.steps.rating.roundset import load_round
from madmine.steps.rating.server import BackgroundServer
from madmine.steps.rating.tokens import RaterError, add_rater
from madmine.workspace import Workspace

SECRET = "ZZ-do-not-echo-ZZ"


@pytest.fixture
def world(tmp_path):
    world = rating_world.build(tmp_path / "w")
    cli_state.set_config_path(world.config_path)
    yield world
    cli_state.set_config_path("madmine.toml")


def serve(world, trusted_proxies: str | None = None, **kwargs):
    app = create_app(world.ws, world.config, load_round(world.ws, world.config, 0), **kwargs)
    return BackgroundServer(app, **({"trusted_proxies": trusted_proxies} if trusted_proxies else {}))


@pytest.fixture
def server(world):
    with serve(world) as running:
        yield running


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def invoke(*args: str):
    result = CliRunner().invoke(cli_app, ["--config", str(cli_state.config_path()), *args], env={"COLUMNS": "200"})
    return result, result.stdout + (result.stderr or "")


def one_line_error(result, text: str) -> str:
    assert result.exit_code == 2, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


# ---- requests ----------------------------------------------------------------------------------
def raw_post(url: str, headers: dict, body: bytes = b"") -> bytes:
    """Send a request byte for byte (the body may be shorter than Content-Length says) and
    return the status line: a server that waits for a body it will refuse never answers."""
    host, port = url.split("//", 1)[1].split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "rating", **headers}.items())
    with socket.create_connection((host, int(port)), timeout=15) as conn:
        conn.sendall(f"POST /api/ratings HTTP/1.1\r\n{head}\r\n".encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_a_large_body_is_refused_before_it_is_read(server, world):
    token = add_rater(world.ws, "alice")
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    # 50 MB announced, none sent: the answer comes from the header alone
    answer = raw_post(server.url, {**auth, "Content-Length": str(50 << 20)})
    assert answer.startswith(b"HTTP/1.1 413 ")
    # no Content-Length: counted as it arrives, refused once past the limit
    chunked = b"%x\r\n" % 20000 + b" " * 20000 + b"\r\n0\r\n\r\n"
    assert raw_post(server.url, {**auth, "Transfer-Encoding": "chunked"}, chunked).startswith(b"HTTP/1.1 413 ")
    # without a token too: the limit comes before everything
    assert raw_post(server.url, {"Content-Length": str(200_000)}).startswith(b"HTTP/1.1 413 ")
    with httpx.Client(base_url=server.url, headers=bearer(token)) as client:
        assert client.get("/api/session").status_code == 200  # and the server is fine
    assert store.load_events(world.ws, 0) == []


def test_the_token_is_checked_before_the_body_is_parsed(server, world):
    deep = b"[" * 5000 + b"]" * 5000  # nested too deeply for Python's JSON parser, under the size limit
    with httpx.Client(base_url=server.url) as client:
        for body in (deep, b"{not json", b'{"image_id": "x", "score": NaN}'):
            answer = client.post("/api/ratings", content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 401, answer.text
            answer = client.post("/api/ratings", content=body, headers={"Content-Type": "application/json",
                                                                        **bearer("nobody.secret")})
            assert answer.status_code == 403, answer.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"image_id": "IMG", "score": NaN}',
        b'{"image_id": "IMG", "score": Infinity}',
        b'{"image_id": "IMG", "score": 1e400}',
        b'{"image_id": "IMG", "score": -1e400}',
        b'{"image_id": "IMG", "score": 3, "' + SECRET.encode() + b'": 1}',
        b'{"image_id": "' + SECRET.encode() * 20 + b'", "score": 3}',
        b'{"image_id": "IMG", "score": "' + SECRET.encode() + b'"}',
        b'{"image_id": ["' + SECRET.encode() + b'"], "score": 3}',
        b'["' + SECRET.encode() + b'"]',
        b"[" * 3000 + b"]" * 3000,
        b'{"image_id": "IMG", "score": 3',
        b"\xff\xfe" + SECRET.encode(),
        b"",
    ],
)
def test_a_bad_vote_is_422_never_500_and_never_echoed(server, world, body):
    token = add_rater(world.ws, "alice")
    body = body.replace(b"IMG", world.image_ids[0].encode())
    with httpx.Client(base_url=server.url, headers=bearer(token)) as client:
        answer = client.post("/api/ratings", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, answer.text
        assert SECRET not in answer.text and "NaN" not in answer.text and len(answer.content) < 1000
        assert "score" in answer.json()["detail"]
    assert store.load_events(world.ws, 0) == []


def test_a_bad_path_parameter_is_422_and_not_echoed(server, world):
    token = add_rater(world.ws, "alice")
    with httpx.Client(base_url=server.url, headers=bearer(token)) as client:
        answer = client.get(f"/api/items/{SECRET * 50}")
        assert answer.status_code == 422 and SECRET not in answer.text
        assert answer.json()["errors"] == [{"loc": ["path", "k"], "type": "int_parsing"}]


# ---- the storage ------------------------------------------------------------------------------
def test_bad_files_in_the_rating_storage_are_skipped_and_reported(server, world):
    alice, bob = add_rater(world.ws, "alice"), add_rater(world.ws, "bob")
    raters = world.root / "work" / "rating" / "raters"
    (raters / "empty.json").write_bytes(b"")
    (raters / "garbled.json").write_bytes(b'{"name": "garbled", "token_sha')
    (raters / "list.json").write_text("[1, 2]")
    (raters / "notes.txt").write_text("hello")
    store.record(world.ws, 0, world.image_ids[0], "bob", 4)
    events = world.root / "work" / "rating" / "events" / "round-0"
    (events / "bob" / "00000000T000000000000Z-empty.json").write_bytes(b"")
    (events / "bob" / "00000000T000000000001Z-garbled.json").write_bytes(b"\x00\xff{")
    bad_score = {"round": 0, "image_id": world.image_ids[1], "rater": "bob", "score": 9,
                 "created_at": "2026-01-01T00:00:00+00:00", "event_id": "e1"}
    (events / "bob" / "00000000T000000000002Z-score.json").write_text(json.dumps(bad_score))
    (events / "mallory").mkdir()
    (events / "mallory" / "00000000T000000000003Z-forged.json").write_text(json.dumps({**bad_score, "score": 1}))

    with httpx.Client(base_url=server.url) as client:
        for token in (alice, bob):
            assert client.get("/api/session", headers=bearer(token)).status_code == 200
            assert client.get("/api/items/0", headers=bearer(token)).status_code == 200
        assert client.get("/api/session", headers=bearer(bob)).json()["done"] == 1
        image = client.get("/api/items/0", headers=bearer(alice)).json()["image_id"]
        assert client.post("/api/ratings", json={"image_id": image, "score": 2}, headers=bearer(alice)).status_code == 200

    result, text = invoke("rate", "status", "--json")
    assert result.exit_code == 0, text
    data = json.loads(result.stdout)
    assert {p["rater"]: p["rated"] for p in data["progress"]} == {"alice": 1, "bob": 1}
    skipped = {item["path"].rsplit("/", 1)[1]: item["reason"] for item in data["skipped_files"]}
    assert set(skipped) == {"empty.json", "garbled.json", "list.json", "notes.txt", "00000000T000000000000Z-empty.json",
                            "00000000T000000000001Z-garbled.json", "00000000T000000000002Z-score.json",
                            "00000000T000000000003Z-forged.json"}
    assert skipped["00000000T000000000002Z-score.json"] == "score 9 is neither 1..5 nor null (out of domain)"
    assert "not the folder's 'mallory'" in skipped["00000000T000000000003Z-forged.json"]
    table, text = invoke("rate", "status")
    assert table.exit_code == 0 and "skipped 8 unreadable file(s)" in text
    chosen, text = invoke("rate", "select", "--n4", "2", "--min-raters", "1", "--allow-partial")
    assert chosen.exit_code == 0 and "skipped 4 unreadable file(s)" in text, text  # the vote files it read
    rows = pq.read_table(tables.SELECTED.path(world.ws, round=0, strategy="mad")).to_pylist()
    assert sorted(r["mos"] for r in rows) == [2.0, 4.0]


def test_rate_select_computes_s_and_the_ratings_table_from_one_snapshot(world, monkeypatch):
    """A vote committed while `rate select` runs counts in neither S nor the ratings table."""
    ids = world.image_ids
    for image_id, score in zip(ids, (1, 2, 3, 4, 5)):
        store.record(world.ws, 0, image_id, "alice", score)
    reads = []
    original = store.load_events

    def read_then_a_vote_arrives(*args, **kwargs):
        events = original(*args, **kwargs)
        if not reads:
            store.record(world.ws, 0, ids[5], "alice", 1)  # after the first read, as a rater would
        reads.append(len(events))
        return events

    monkeypatch.setattr(store, "load_events", read_then_a_vote_arrives)
    result, text = invoke("rate", "select", "--n4", "2", "--allow-partial")
    assert result.exit_code == 0, text
    selected = pq.read_table(tables.SELECTED.path(world.ws, round=0, strategy="mad")).to_pylist()
    ratings = tables.RATINGS.read(world.ws).to_pylist()
    assert sorted(r["image_id"] for r in ratings) == sorted(ids[:5])  # the table S was computed from
    assert [r["image_id"] for r in selected] == [ids[0], ids[1]]
    assert len(original(world.ws, 0)) == 6  # the late vote is stored all the same, for the next select


def test_two_servers_on_one_workspace_show_the_same_progress(world):
    token = add_rater(world.ws, "alice")
    with serve(world) as one, serve(world) as two, \
            httpx.Client(base_url=one.url, headers=bearer(token)) as first, \
            httpx.Client(base_url=two.url, headers=bearer(token)) as second:
        assert second.get("/api/session").json()["done"] == 0  # the second server has its session now
        image = first.get("/api/items/0").json()["image_id"]
        assert first.post("/api/ratings", json={"image_id": image, "score": 3}).status_code == 200
        session = second.get("/api/session").json()
        assert session["done"] == 1 and session["resume"] == 1
        assert second.get("/api/items/0").json()["score"] == 3
        assert second.post("/api/ratings", json={"image_id": image, "score": 5}).status_code == 200
        assert first.get("/api/items/0").json()["score"] == 5


# ---- access -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mallory\n", "mallory\r\n", "a/b", "../x", "", ".hidden", "x" * 65, "al ice", "ü"])
def test_rater_names_must_match_whole(world, name):
    with pytest.raises(RaterError, match="rater name"):
        add_rater(world.ws, name)
    assert not list((world.root / "work").glob("rating/raters/*"))


def test_a_new_link_works_at_once_and_revoke_ends_it_at_once(server, world):
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/api/session", headers=bearer("carol.nope")).status_code == 403
        carol = add_rater(world.ws, "carol")
        assert client.get("/api/session", headers=bearer(carol)).status_code == 200  # no wait for a reload
        again = add_rater(world.ws, "carol")
        assert client.get("/api/session", headers=bearer(carol)).status_code == 403  # re-keyed: the old link is dead
        assert client.get("/api/session", headers=bearer(again)).status_code == 200
        result, text = invoke("rate", "revoke", "carol")
        assert result.exit_code == 0, text
        assert client.get("/api/session", headers=bearer(again)).status_code == 403
        assert client.post("/api/login", headers=bearer(again)).status_code == 403
    line = one_line_error(*invoke("rate", "revoke", "carol"))
    assert "no rater named 'carol'" in line


def test_the_cookie_is_secure_behind_tls(world):
    token = add_rater(world.ws, "alice")

    def cookie(running, headers=None) -> str:
        with httpx.Client(base_url=running.url) as client:
            return client.post("/api/login", headers={**bearer(token), **(headers or {})}).headers["set-cookie"].lower()

    https = {"X-Forwarded-Proto": "https"}
    with serve(world) as plain:
        assert "secure" not in cookie(plain)
        assert "; secure" in cookie(plain, https)  # from a trusted proxy (127.0.0.1 by default)
    with serve(world, behind_tls=True) as tls:
        assert "; secure" in cookie(tls)
    with serve(world, trusted_proxies="192.0.2.1") as untrusted:
        assert "secure" not in cookie(untrusted, https)  # anyone else's X-Forwarded-Proto counts for nothing


# ---- the command line -------------------------------------------------------------------------
def test_only_loopback_binds_are_quiet():
    from madmine.steps.rating.server import exposure_warning

    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.5"):
        assert exposure_warning(host) is None
    for host in ("0.0.0.0", "::", "192.168.1.10", "rate.example.org"):
        assert "plain HTTP" in exposure_warning(host)


def test_serve_failures_are_one_line(world):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = str(busy.getsockname()[1])
        cases = [
            (["--port", port], f"port {port} on 127.0.0.1 is in use"),
            (["--port", "70000"], "--port must be within 0..65535"),
            (["--host", "no-such-host.invalid", "--port", "0"], "cannot bind host 'no-such-host.invalid'"),
        ]
        for args, expected in cases:
            line = one_line_error(*invoke("rate", "serve", "--round", "0", *args))
            assert expected in line
    finally:
        busy.close()
    result, text = invoke("rate", "serve", "--round", "0", "--host", "192.0.2.123", "--port", "0")  # TEST-NET-1
    assert "WARNING: binding 192.0.2.123 serves the rating app over plain HTTP" in text
    assert "192.0.2.123 is not an address of this machine" in one_line_error(result, text)


def test_a_read_only_workspace_is_one_line(world, monkeypatch, capsys):
    def read_only(self, path, data):
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(Workspace, "put_bytes", read_only)
    line = one_line_error(*invoke("rate", "serve", "--round", "0", "--port", "0"))
    assert "cannot be written (Read-only file system)" in line
    for args in (["rate", "add-rater", "alice"], ["rate", "status"]):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["--config", str(world.config_path), *args])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert [line for line in err.splitlines() if line.startswith("error:")] == [
            next(line for line in err.splitlines() if line.startswith("error:"))
        ]
        assert "Read-only file system" in err and "check that the workspace is writable" in err
