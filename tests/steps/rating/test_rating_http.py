"""The rating server over real HTTP on 127.0.0.1: access, validation, ids only, durability."""

from __future__ import annotations

import http.client
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from madmine import tables
from madmine.steps.rating import store
from madmine.steps.rating.tokens import add_rater
from worlds import store_maps


@pytest.fixture
def tokens(world):
    return {name: add_rater(world.ws, name) for name in ("alice", "bob")}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def raw_get(url: str, path: str, token: str) -> tuple[int, bytes]:
    """A request whose path goes out byte for byte (no client-side normalisation of '..')."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_server_binds_loopback(server):
    assert urlsplit(server.url).hostname == "127.0.0.1"


def test_requests_without_a_valid_token_are_refused(server, world, tokens):
    image_id = world.image_ids[0]
    wrong = tokens["alice"][:-4] + "AAAA"
    requests = [
        ("GET", "/"),
        ("GET", "/api/session"),
        ("GET", "/api/items/0"),
        ("GET", f"/api/images/{image_id}"),
        ("GET", f"/api/maps/target/{image_id}"),
        ("POST", "/api/ratings"),
    ]
    with httpx.Client(base_url=server.url) as client:
        for method, path in requests:
            body = {"image_id": image_id, "score": 3} if method == "POST" else None
            assert client.request(method, path, json=body).status_code == 401, path
            assert client.request(method, path, json=body, headers=bearer(wrong)).status_code == 403, path
            cookie = {"Cookie": f"madmine_token={wrong}"}
            assert client.request(method, path, json=body, headers=cookie).status_code == 403, path
        assert client.post("/api/login", headers=bearer(wrong)).status_code == 403
        assert client.post("/api/login").status_code == 401
    assert store.load_events(world.ws, 0) == []


def test_the_link_is_exchanged_for_a_cookie_that_opens_the_page(server, tokens):
    with httpx.Client(base_url=server.url) as client:
        login = client.get("/login")  # the page the link opens: the token stays in the fragment
        assert login.status_code == 200 and "/static/login.js" in login.text
        first = client.post("/api/login", headers=bearer(tokens["alice"]))
        assert first.status_code == 200 and first.json()["rater"] == "alice"
        cookie = first.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
        page = client.get("/")
        assert page.status_code == 200 and "out of domain" in page.text
        assert client.get("/api/session").json()["rater"] == "alice"


@pytest.mark.parametrize(
    "body",
    [
        {"score": 0},
        {"score": 6},
        {"score": -1},
        {"score": "abc"},
        {"score": "3"},
        {"score": 3.5},
        {"score": True},
        {"score": None},
        {},
        {"score": 3, "out_of_domain": True},
        {"out_of_domain": "yes"},
    ],
)
def test_invalid_votes_are_422_and_store_nothing(server, world, tokens, body):
    with httpx.Client(base_url=server.url, headers=bearer(tokens["alice"])) as client:
        response = client.post("/api/ratings", json={"image_id": world.image_ids[0], **body})
        assert response.status_code == 422, response.text
        not_json = client.post("/api/ratings", content=b"score=3", headers={"Content-Type": "application/json"})
        assert not_json.status_code == 422
    assert store.load_events(world.ws, 0) == []


def test_images_outside_the_round_are_404(server, world, tokens):
    stranger = "ff" * 16
    # a cached map exists for it, but it is not a candidate of the round
    store_maps(world.ws, "target", "t-v1", {stranger: world.target_maps[world.image_ids[0]]})
    with httpx.Client(base_url=server.url, headers=bearer(tokens["alice"])) as client:
        assert client.get(f"/api/images/{stranger}").status_code == 404
        assert client.get(f"/api/maps/target/{stranger}").status_code == 404
        assert client.post("/api/ratings", json={"image_id": stranger, "score": 3}).status_code == 404
        assert client.get(f"/api/maps/nomodel/{world.image_ids[0]}").status_code == 404
        assert client.get("/api/items/999").status_code == 404
        assert client.get("/api/items/-1").status_code == 404
        ok = client.get(f"/api/images/{world.image_ids[0]}")
        assert ok.status_code == 200 and ok.headers["content-type"] == "image/jpeg"
        assert client.get(f"/api/maps/fcn/{world.image_ids[0]}").headers["content-type"] == "image/png"
        rotated = world.image_ids[-1]  # a JPEG whose EXIF says "rotate 90 degrees": shown upright
        height, width = world.sizes[rotated]
        assert Image.open(io.BytesIO(client.get(f"/api/images/{rotated}").content)).size == (width, height)
        overlay = Image.open(io.BytesIO(client.get(f"/api/maps/target/{rotated}").content))
        assert overlay.size == (width, height) and overlay.mode == "P"
        np.testing.assert_array_equal(np.asarray(overlay), world.target_maps[rotated])
    assert store.load_events(world.ws, 0) == []


def test_path_traversal_is_404(server, world, tokens):
    secret = world.root / "secret.txt"
    secret.write_text("root:x:0:0 do-not-serve")
    image_id = world.image_ids[0]
    attempts = [
        "/api/images/../../../../etc/passwd",
        "/api/images/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/images/%2e%2e%2fsecret.txt",
        f"/api/images/{image_id}%2F..%2F..%2Fsecret.txt",
        "/api/images/" + "%2F".join([".."] * 8) + str(secret).replace("/", "%2F"),
        f"/api/maps/..%2F..%2F..%2Fmadmine.toml/{image_id}",
        "/api/maps/target/..%2F..%2F..%2Fmadmine.toml",
        "/static/..%2F..%2Fapp.py",
        "/static/../app.py",
        "/static/%2e%2e/roundset.py",
    ]
    for path in attempts:
        status, body = raw_get(server.url, path, tokens["alice"])
        assert status == 404, path
        assert b"root:" not in body and b"[workspace]" not in body


def test_raters_never_see_each_others_scores(server, world, tokens):
    with httpx.Client(base_url=server.url, headers=bearer(tokens["alice"])) as alice, \
            httpx.Client(base_url=server.url, headers=bearer(tokens["bob"])) as bob:
        first = alice.get("/api/items/0").json()["image_id"]
        assert alice.post("/api/ratings", json={"image_id": first, "score": 2}).status_code == 200
        bob_k = next(k for k in range(len(world.image_ids)) if bob.get(f"/api/items/{k}").json()["image_id"] == first)
        seen = bob.get(f"/api/items/{bob_k}").json()
        assert seen["rated"] is False and seen["score"] is None
        assert bob.get("/api/session").json()["done"] == 0
        assert "2" not in {str(v) for v in bob.get("/api/session").json().values() if not isinstance(v, (dict, list))}


def test_a_vote_is_committed_before_the_answer_and_the_latest_wins(server, world, tokens):
    with httpx.Client(base_url=server.url, headers=bearer(tokens["alice"])) as client:
        image_id = client.get("/api/items/0").json()["image_id"]
        assert client.post("/api/ratings", json={"image_id": image_id, "score": 2}).json()["next"] == 1
        assert [e["score"] for e in store.load_events(world.ws, 0, "alice")] == [2]
        client.post("/api/ratings", json={"image_id": image_id, "out_of_domain": True})
        client.post("/api/ratings", json={"image_id": image_id, "score": 5})
        item = client.get("/api/items/0").json()
        assert item["rated"] and item["score"] == 5
    table = store.materialise(world.ws, 0)
    assert table.to_pylist()[0]["score"] == 5 and table.num_rows == 1
    assert tables.RATINGS.read(world.ws).num_rows == 1


def _start_cli_server(world) -> tuple[subprocess.Popen, str]:
    cli = Path(sys.executable).with_name("madmine")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [str(cli), "--config", str(world.config_path), "rate", "serve", "--round", "0", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if " at http://" in line:
            url = line.split(" at ", 1)[1].strip().rstrip("/")
            return proc, url
    proc.kill()
    raise AssertionError("`madmine rate serve` did not print its address:\n" + "".join(seen))


def test_sigkill_mid_session_loses_no_committed_rating(world, tokens):
    proc, url = _start_cli_server(world)
    acknowledged = []
    try:
        assert urlsplit(url).hostname == "127.0.0.1"
        with httpx.Client(base_url=url, headers=bearer(tokens["alice"]), timeout=10) as client:
            session = client.get("/api/session").json()
            k = session["resume"]
            for score in (1, 4, 2, 5):
                image_id = client.get(f"/api/items/{k}").json()["image_id"]
                answer = client.post("/api/ratings", json={"image_id": image_id, "score": score})
                assert answer.status_code == 200
                acknowledged.append((image_id, score))
                k = answer.json()["next"]
            client.get(f"/api/images/{client.get(f'/api/items/{k}').json()['image_id']}")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    table = store.materialise(world.ws, 0)
    assert sorted((r["image_id"], r["score"]) for r in table.to_pylist()) == sorted(acknowledged)
    proc, url = _start_cli_server(world)
    try:
        with httpx.Client(base_url=url, headers=bearer(tokens["alice"]), timeout=10) as client:
            assert client.get("/api/session").json()["resume"] == len(acknowledged)
            assert client.get("/api/session").json()["done"] == len(acknowledged)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
