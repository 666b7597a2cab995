"""One-time sign-in codes and the sessions they open (steps/rating/logins.py), over real HTTP on
127.0.0.1: a code signs in once, a session is no lasting token, and re-keying or revoking a
rater ends their unused links and open sessions at once."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from typer.testing import CliRunner

from madmine.cli import app as cli_app
from madmine.steps.rating import logins
from madmine.steps.rating.app import COOKIE
from madmine.steps.rating.tokens import RaterError, RaterRegistry, add_rater, hash_token


@contextmanager
def sign_in(url: str, code: str):
    with httpx.Client(base_url=url) as client:
        answer = client.post("/api/login", json={"code": code})
        assert answer.status_code == 200, answer.text
        yield client


def test_a_code_signs_in_once_and_holds_no_lasting_credential(world, server):
    token = add_rater(world.ws, "alice")
    code = logins.issue_code(world.ws, "alice")
    with sign_in(server.url, code) as client:
        session = client.cookies.get(COOKIE)
        assert session and token not in session and code not in session
        assert client.get("/api/session").json()["rater"] == "alice"
    with httpx.Client(base_url=server.url) as other:
        again = other.post("/api/login", json={"code": code})
        assert again.status_code == 403 and "used already" in again.json()["detail"]
        for credential in (code, session):  # neither the code nor the session works as an API token
            assert other.get("/api/session", headers={"Authorization": f"Bearer {credential}"}).status_code == 403
        assert other.get("/api/session", headers={"Cookie": f"{COOKIE}={code}"}).status_code == 403  # a code is no session
        assert other.get("/api/session", headers={"Cookie": f"{COOKIE}={token}"}).status_code == 403  # nor is the API token
        assert other.get("/api/session", headers={"Cookie": f"{COOKIE}={session}"}).json()["rater"] == "alice"
    assert not list((world.root / "work" / "rating" / "logins" / "alice").iterdir())  # the code's record is gone


def test_a_code_raced_by_many_requests_signs_in_exactly_once(world, server):
    add_rater(world.ws, "alice")
    code = logins.issue_code(world.ws, "alice")

    def attempt(_):
        with httpx.Client(base_url=server.url, timeout=20) as client:
            return client.post("/api/login", json={"code": code}).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(attempt, range(24)))
    assert sorted(codes) == [200] + [403] * 23


def test_rekeying_and_revoking_end_links_and_sessions(world, server):
    add_rater(world.ws, "alice")
    with sign_in(server.url, logins.issue_code(world.ws, "alice")) as open_session:
        unused = logins.issue_code(world.ws, "alice")
        add_rater(world.ws, "alice")  # re-keyed
        assert open_session.get("/api/session").status_code == 403
    with httpx.Client(base_url=server.url) as client:
        assert client.post("/api/login", json={"code": unused}).status_code == 403
    with sign_in(server.url, logins.issue_code(world.ws, "alice")) as fresh:
        later = logins.issue_code(world.ws, "alice")
        assert fresh.get("/api/session").status_code == 200
        result = CliRunner().invoke(cli_app, ["--config", str(world.config_path), "rate", "revoke", "alice"])
        assert result.exit_code == 0, result.output
        assert fresh.get("/api/session").status_code == 403
    with httpx.Client(base_url=server.url) as client:
        assert client.post("/api/login", json={"code": later}).status_code == 403
    assert not (world.root / "work" / "rating" / "sessions" / "alice").exists()
    assert not (world.root / "work" / "rating" / "logins" / "alice").exists()


def test_a_session_ends_when_it_expires_and_at_logout(world, server):
    add_rater(world.ws, "alice")
    with sign_in(server.url, logins.issue_code(world.ws, "alice")) as client:
        value = client.cookies.get(COOKIE)
        path = world.root / "work" / "rating" / "sessions" / "alice" / f"{hash_token(value)}.json"
        entry = json.loads(path.read_text())
        assert datetime.fromisoformat(entry["expires_at"]) - datetime.now(UTC) > timedelta(days=logins.SESSION_DAYS - 1)
        path.write_text(json.dumps({**entry, "expires_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()}))
        assert client.get("/api/session").status_code == 403
        path.write_text(json.dumps(entry))
        assert client.get("/api/session").status_code == 200
        assert client.post("/api/logout").status_code == 200
        assert not path.exists()
        assert httpx.get(f"{server.url}/api/session", headers={"Cookie": f"{COOKIE}={value}"}).status_code == 403


def test_login_bodies_are_checked(world, server):
    add_rater(world.ws, "alice")
    with httpx.Client(base_url=server.url) as client:
        assert client.post("/api/login").status_code == 401
        assert client.post("/api/login", content=b"code=alice.x", headers={"Content-Type": "text/plain"}).status_code == 415
        for body in (b"{", b"[]", b'{"code": 3}', b'{"code": ""}', b'{"code": NaN}'):
            answer = client.post("/api/login", content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 422 and answer.json()["errors"][0]["loc"] == ["body", "code"], body
        for code in ("alice", "../x.y", "alice." + "x" * 300, "nobody.secret", "alice.secret"):
            assert client.post("/api/login", json={"code": code}).status_code == 403, code


def test_codes_are_only_for_existing_raters(world):
    with pytest.raises(RaterError, match="no rater named 'bob'"):
        logins.issue_code(world.ws, "bob")
    add_rater(world.ws, "bob")
    code = logins.issue_code(world.ws, "bob")
    assert RaterRegistry(world.ws).lookup(code) is None
