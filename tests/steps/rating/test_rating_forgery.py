"""Forged votes: a page of another origin (another port of 127.0.0.1 is enough: same site, so
the SameSite=Strict cookie goes along) must not change a signed-in rater's votes, in a real
browser or by direct requests. Requests that change state must come from the app's own origin
and carry application/json."""

from __future__ import annotations

import httpx
import pytest

import rating_world
from browser import open_page, wait_ready
from html_page import HtmlPage
from madmine.steps.rating import store
from madmine.steps.rating.app import COOKIE, create_app
from madmine.steps.rating.logins import issue_code
from madmine.steps.rating.roundset import load_round
from madmine.steps.rating.server import BackgroundServer
from madmine.steps.rating.tokens import add_rater

EVIL = """<!doctype html><html><body data-state="loading"><form id="f" method="POST" action="{url}/api/ratings"
 enctype="text/plain"><input name='{{"image_id": "{image}", "score": 1, "x": "' value='"}}'></form>
<script>
(async () => {{
  const vote = JSON.stringify({{image_id: "{image}", score: 1}});
  const tries = [
    fetch("{url}/api/ratings", {{method: "POST", mode: "no-cors", credentials: "include", body: new Blob([vote])}}),
    fetch("{url}/api/ratings", {{method: "POST", mode: "no-cors", credentials: "include", body: vote,
                                  headers: {{"Content-Type": "text/plain"}}}}),
    fetch("{url}/api/ratings", {{method: "POST", credentials: "include", body: vote,
                                  headers: {{"Content-Type": "application/json"}}}}),
    fetch("{url}/api/logout", {{method: "POST", mode: "no-cors", credentials: "include"}}),
  ];
  for (const t of tries) {{ try {{ await t; }} catch (e) {{}} }}
  document.body.dataset.state = "sent";
}})();
</script></body></html>"""


@pytest.fixture
def alice(world):
    return add_rater(world.ws, "alice")


def latest_scores(world) -> dict:
    return {e["image_id"]: e["score"] for e in store.load_events(world.ws, 0, "alice")}


def test_a_page_on_another_port_cannot_vote_for_a_signed_in_rater(world, server, alice, browser):
    page = open_page(browser, f"{server.url}/login#{issue_code(world.ws, 'alice')}")
    image = page.locator("body").get_attribute("data-image-id")
    page.keyboard.press("3")
    page.wait_for_function("() => document.body.dataset.k === '1'", timeout=15_000)
    wait_ready(page)
    assert latest_scores(world) == {image: 3}
    evil = page.context.new_page()  # the same browser profile: alice's cookie goes along
    with HtmlPage(EVIL.format(url=server.url, image=image)) as site:
        evil.goto(site.url)
        evil.wait_for_selector("body[data-state='sent']", timeout=15_000)
        evil.evaluate("document.getElementById('f').submit()")
        evil.wait_for_load_state()
    assert latest_scores(world) == {image: 3}  # nothing the other page sent counted
    page.reload()  # and alice is still signed in: the forged logout did nothing either
    wait_ready(page)
    assert page.locator("#rater").inner_text() == "alice"
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("() => document.body.dataset.k === '0'", timeout=15_000)
    wait_ready(page)
    page.keyboard.press("5")  # her own page still votes
    page.wait_for_function("() => document.body.dataset.k === '1'", timeout=15_000)
    assert latest_scores(world) == {image: 5}


def test_direct_requests_need_this_origin_and_json(world, server, alice):
    with httpx.Client(base_url=server.url) as client:
        answer = client.post("/api/login", json={"code": issue_code(world.ws, "alice")})
        assert answer.status_code == 200
        image = world.image_ids[0]
        vote = b'{"image_id": "%s", "score": 1}' % image.encode()
        cases = [
            ({"Origin": "http://evil.example", "Content-Type": "text/plain"}, 403),
            ({"Origin": "http://evil.example", "Content-Type": "application/json"}, 403),
            ({"Origin": server.url.replace("127.0.0.1", "localhost"), "Content-Type": "application/json"}, 403),
            ({"Origin": "null", "Content-Type": "application/json"}, 403),
            ({"Sec-Fetch-Site": "same-site", "Content-Type": "application/json"}, 403),
            ({"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}, 403),
            ({"Content-Type": "text/plain"}, 415),
            ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
            ({}, 415),
        ]
        for headers, status in cases:
            assert client.post("/api/ratings", content=vote, headers=headers).status_code == status, headers
        assert store.load_events(world.ws, 0) == []
        cookie = client.cookies.get(COOKIE)
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            assert client.post("/api/logout", headers=headers).status_code == 403
            assert client.post("/api/login", json={"code": "alice.x"}, headers=headers).status_code == 403
        assert client.cookies.get(COOKIE) == cookie and client.get("/api/session").status_code == 200
        own = {"Origin": server.url, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json; charset=utf-8"}
        assert client.post("/api/ratings", content=vote, headers=own).status_code == 200
        assert client.post("/api/ratings", content=vote, headers={"Content-Type": "application/json"}).status_code == 200
        assert [e["score"] for e in store.load_events(world.ws, 0)] == [1, 1]
        assert client.post("/api/logout", headers={"Origin": server.url}).status_code == 200
        assert client.get("/api/session").status_code == 401


def test_the_public_url_is_this_apps_origin_behind_a_proxy(tmp_path):
    world = rating_world.build(tmp_path / "w", extra_toml='[rating]\npublic_url = "https://rate.example.org"\n')
    token = add_rater(world.ws, "alice")
    app = create_app(world.ws, world.config, load_round(world.ws, world.config, 0))
    vote = {"image_id": world.image_ids[0], "score": 4}
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url,
                                                       headers={"Authorization": f"Bearer {token}"}) as client:
        assert client.post("/api/ratings", json=vote, headers={"Origin": "https://rate.example.org"}).status_code == 200
        assert client.post("/api/ratings", json=vote, headers={"Origin": "https://evil.example.org"}).status_code == 403
