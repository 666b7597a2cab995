"""Raters in a real browser (Playwright driving Debian's chromium) against a live server."""

from __future__ import annotations

import pytest

import rating_world
from browser import history_urls, open_page, profile, shown, wait_ready
from madmine import tables
from madmine.steps.rating import store
from madmine.steps.rating.app import create_app
from madmine.steps.rating.logins import issue_code
from madmine.steps.rating.roundset import load_round
from madmine.steps.rating.server import BackgroundServer
from madmine.steps.rating.tokens import add_rater


class Links:
    """A fresh one-time sign-in link per call, as `madmine rate link NAME` prints it."""

    def __init__(self, world, url: str):
        self.world, self.url = world, url

    def __getitem__(self, name: str) -> str:
        return f"{self.url}/login#{issue_code(self.world.ws, name)}"


@pytest.fixture
def setup(tmp_path, browser):
    world = rating_world.build(tmp_path / "w")
    for name in ("alice", "bob"):
        add_rater(world.ws, name)
    app = create_app(world.ws, world.config, load_round(world.ws, world.config, 0))
    with BackgroundServer(app) as server:
        yield world, Links(world, server.url), server, browser


def committed(world, rater: str) -> dict[str, int | None]:
    return {e["image_id"]: e["score"] for e in store.load_events(world.ws, 0, rater)}


def step(page, action) -> tuple[int, str | None]:
    """Do something that moves on, wait for the next image, return what is shown."""
    before = shown(page)
    action()
    page.wait_for_function(
        "([k, id]) => document.body.dataset.state !== 'saving' && document.body.dataset.state !== 'loading'"
        " && (document.body.dataset.k !== String(k) || document.body.dataset.imageId !== id)",
        arg=list(before),
        timeout=15_000,
    )
    wait_ready(page)
    return shown(page)


def image_loaded(page, selector: str) -> bool:
    return page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0")


def test_two_raters_rate_by_click_and_key_and_resume(setup, tmp_path):
    world, links, server, browser = setup
    n = len(world.image_ids)
    alice = open_page(browser, links["alice"])
    bob = open_page(browser, links["bob"])

    # the page: image, target overlay, legend, progress, competitor on demand, opacity
    k0, first = shown(alice)
    assert k0 == 0 and first in world.image_ids
    assert alice.locator("#progress").inner_text() == f"image 1 of {n} · 0 rated"
    assert image_loaded(alice, "#photo") and image_loaded(alice, "#overlay")
    legend = alice.locator("#legend li").all_inner_texts()
    assert [t.split(" (")[0] for t in legend] == rating_world.CLASSES
    assert alice.locator("#legend li.present").count() >= 2
    alice.locator("#opacity").fill("25")
    assert alice.eval_on_selector("#overlay", "img => img.style.opacity") == "0.25"
    assert alice.locator("#competitor-panel").is_hidden()
    alice.keyboard.press("c")
    alice.wait_for_selector("#competitor-panel:not([hidden])")
    wait_ready(alice)
    assert image_loaded(alice, "#competitor-overlay")
    assert alice.locator("#competitor-overlay").get_attribute("src").startswith("/api/maps/fcn/")

    # alice: a click, a key, out of domain; bob rates in between
    seen = {0: first}
    k, seen[1] = step(alice, lambda: alice.locator("button[data-score='2']").click())
    assert k == 1 and committed(world, "alice") == {first: 2}
    _, bob_second = step(bob, lambda: bob.keyboard.press("1"))
    k, seen[2] = step(alice, lambda: alice.keyboard.press("4"))
    assert k == 2 and committed(world, "alice")[seen[1]] == 4
    _, bob_third = step(bob, lambda: bob.locator("button[data-score='5']").click())
    k, seen[3] = step(alice, lambda: alice.keyboard.press("o"))
    assert k == 3 and committed(world, "alice")[seen[2]] is None
    assert alice.locator("#progress").inner_text() == f"image 4 of {n} · 3 rated"

    # back twice shows her own earlier votes; a new vote replaces the old one
    k, image = step(alice, lambda: alice.keyboard.press("ArrowLeft"))
    assert (k, image) == (2, seen[2]) and "out of domain" in alice.locator("#your-score").inner_text()
    k, image = step(alice, lambda: alice.locator("#back").click())
    assert (k, image) == (1, seen[1]) and "4 (good)" in alice.locator("#your-score").inner_text()
    assert "chosen" in alice.locator("button[data-score='4']").get_attribute("class")
    k, image = step(alice, lambda: alice.locator("button[data-score='3']").click())
    assert (k, image) == (3, seen[3])

    # reload: alice resumes at her first unrated image
    alice.reload()
    wait_ready(alice)
    assert shown(alice) == (3, seen[3])
    assert alice.locator("#progress").inner_text() == f"image 4 of {n} · 3 rated"

    # bob finishes the round by keyboard and sees the end page
    while shown(bob)[0] < n:
        step(bob, lambda: bob.keyboard.press("3"))
    assert bob.locator("body").get_attribute("data-state") == "done"
    assert bob.locator("#done").is_visible()
    bob.screenshot(path=str(tmp_path / "done.png"))

    table = store.materialise(world.ws, 0)
    got = {(r["rater"], r["image_id"]): r["score"] for r in tables.RATINGS.read(world.ws).to_pylist()}
    assert table.num_rows == len(got) == 3 + n
    assert {k: v for k, v in got.items() if k[0] == "alice"} == {
        ("alice", seen[0]): 2, ("alice", seen[1]): 3, ("alice", seen[2]): None
    }
    bob_scores = {image: score for (rater, image), score in got.items() if rater == "bob"}
    assert len(bob_scores) == n and set(bob_scores.values()) <= {1, 5, 3}
    assert bob_scores[bob_second] == 5 and bob_scores[bob_third] == 3
    assert all(r["created_at"] is not None for r in table.to_pylist())

    alice.screenshot(path=str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_the_link_leaves_its_code_in_neither_the_address_bar_nor_the_history(setup):
    world, links, server, browser = setup
    link = links["alice"]
    code = link.split("#", 1)[1]
    page = open_page(browser, link)
    assert page.url == f"{server.url}/"
    assert code not in page.evaluate("document.cookie")  # HttpOnly: no script reads the session either
    assert page.locator("#rater").inner_text() == "alice"
    visited = [page.url]
    for _ in range(4):  # back through every entry of the tab's history
        page.go_back(timeout=5_000)
        if page.url == visited[-1]:
            break
        visited.append(page.url)
    assert visited == [f"{server.url}/", "about:blank"]  # the link's entry was replaced, code and all
    refused = browser.new_context().new_page()
    refused.goto(f"{server.url}/login#alice.not-the-code")
    refused.wait_for_selector("body[data-state='refused']", timeout=15_000)
    assert "not valid" in refused.locator("#login-status").inner_text()
    assert refused.url == f"{server.url}/login"


def test_a_link_in_the_browsers_history_opens_nothing_once_used(tmp_path, playwright, browser):
    """The browser records /login#<code> in its global history before the page's script runs
    (replaceState cannot take it out of there). Opened again from there, in the same profile or
    another, the used code signs nobody in; the session it opened goes on working."""
    world = rating_world.build(tmp_path / "w")
    add_rater(world.ws, "alice")
    app = create_app(world.ws, world.config, load_round(world.ws, world.config, 0))
    data_dir = tmp_path / "profile"
    with BackgroundServer(app) as server:
        link = f"{server.url}/login#{issue_code(world.ws, 'alice')}"
        with profile(playwright, data_dir) as context:
            page = context.new_page()
            page.goto(link)
            wait_ready(page)
            assert page.locator("#rater").inner_text() == "alice"
        recorded = [url for url in history_urls(data_dir) if "/login#" in url]
        assert recorded == [link]  # the whole link, code included, is in the history
        with profile(playwright, data_dir) as context:  # the same profile: its session cookie still signs alice in
            page = context.new_page()
            page.goto(f"{server.url}/")
            wait_ready(page)
            assert page.locator("#rater").inner_text() == "alice"
            again = context.new_page()
            again.goto(recorded[0])  # the history entry, as the address bar would offer it
            again.wait_for_selector("body[data-state='refused']", timeout=15_000)
            assert "used already" in again.locator("#login-status").inner_text()
        other = browser.new_context().new_page()  # anyone else who got hold of the history
        other.goto(recorded[0])
        other.wait_for_selector("body[data-state='refused']", timeout=15_000)
        other.goto(f"{server.url}/")
        assert "open your personal rating link" in other.locator("h1").inner_text()
