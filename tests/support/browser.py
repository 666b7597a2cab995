"""Playwright on Debian's chromium (/usr/bin/chromium; scripts/install-browser.sh installs it).

Also a script: `python tests/support/browser.py docs/rating-page.png` builds a small workspace, serves
the rating page on 127.0.0.1 and saves a screenshot of it.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(pw) -> Browser:
    """Debian's chromium, headless, from a running Playwright."""
    return pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)


@contextmanager
def chromium():
    """Playwright and chromium for a script (tests take the session's `browser` fixture: Playwright's
    sync API runs one instance per process)."""
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def profile(pw, user_data_dir: Path):
    """Chromium with a profile on disk (its History database included), closed on exit."""
    context = pw.chromium.launch_persistent_context(str(user_data_dir), executable_path=CHROMIUM, args=ARGS,
                                                    viewport={"width": 1280, "height": 800})
    try:
        yield context
    finally:
        context.close()


def history_urls(user_data_dir: Path) -> list[str]:
    """Every URL in a closed profile's global history (what the address bar suggests, what syncs)."""
    con = sqlite3.connect(f"file:{user_data_dir / 'Default' / 'History'}?mode=ro", uri=True)
    try:
        return [row[0] for row in con.execute("SELECT url FROM urls")]
    finally:
        con.close()


def open_page(browser: Browser, link: str) -> Page:
    """A fresh browser profile (own cookies) on a rater's link, waiting for the first image."""
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(link)
    wait_ready(page)
    return page


def wait_ready(page: Page) -> None:
    page.wait_for_selector("body[data-state='ready'], body[data-state='done']", timeout=15_000)


def shown(page: Page) -> tuple[int, str | None]:
    """(index, image_id) of what the rater sees now."""
    body = page.locator("body")
    return int(body.get_attribute("data-k")), body.get_attribute("data-image-id")


def screenshot(out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import rating_world
    from madmine.steps.rating.app import create_app
    from madmine.steps.rating.logins import issue_code
    from madmine.steps.rating.roundset import load_round
    from madmine.steps.rating.server import BackgroundServer
    from madmine.steps.rating.tokens import add_rater

    with tempfile.TemporaryDirectory() as tmp:
        world = rating_world.build(Path(tmp) / "w", n_images=8, rotated=False, large=True)
        add_rater(world.ws, "alice")
        app = create_app(world.ws, world.config, load_round(world.ws, world.config, 0))
        with BackgroundServer(app) as server, chromium() as browser:
            page = open_page(browser, f"{server.url}/login#{issue_code(world.ws, 'alice')}")
            page.keyboard.press("4")
            wait_ready(page)
            page.keyboard.press("c")
            page.wait_for_selector("#competitor-panel:not([hidden])")
            wait_ready(page)
            page.set_viewport_size({"width": 1280, "height": 540})
            page.screenshot(path=str(out))


if __name__ == "__main__":
    screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/rating-page.png"))
