"""The round report opened from disk in a real browser (Playwright driving Debian's chromium):
it renders, every image loads, nothing logs an error, and it shows the workspace's numbers.

Also a script: `python tests/steps/report/test_report.py docs/report.png` builds a round with larger
pictures and saves a screenshot of its report.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import evaluate_world as world
from browser import chromium
from madmine.steps.evaluation import evaluate as ev
from madmine.steps.report import write_report

CHECK_IMAGES = """() => Array.from(document.images).map(i => ({
    ok: i.complete && i.naturalWidth > 0, src: i.getAttribute('src').slice(0, 22), alt: i.alt}))"""


def open_report(browser, path: Path, height: int = 900):
    page = browser.new_context(viewport={"width": 1280, "height": height}).new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(path.resolve().as_uri(), wait_until="load")
    return page, problems


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    w = world.full_round(root / "w")
    out = root / "out" / "round-1.html"
    assert write_report(w.config, w.ws, w.round, out) == str(out)
    return w, out


def test_report_renders_every_image_without_errors(report, browser):
    w, out = report
    page, problems = open_report(browser, out)
    images = page.evaluate(CHECK_IMAGES)
    page.screenshot(path=str(out.with_suffix(".png")), full_page=True)
    headings = page.locator("h2").all_inner_texts()
    assert problems == []
    assert len(images) >= 1 + 12 * 4  # plots, and per gallery tile the photo three times and two maps
    assert all(i["ok"] for i in images), [i for i in images if not i["ok"]]
    assert all(i["src"].startswith("data:image/") for i in images)  # self-contained
    for title in ("The round in numbers", "Table 1", "SRCC", "Table 2", "Selection quality", "Candidates per class",
                  "Top candidates", "Ratings and rater agreement", "Fine-tuning"):
        assert any(title in h for h in headings), (title, headings)


def test_report_shows_the_workspace_numbers(report):
    w, out = report
    html = out.read_text()
    summary, _ = ev.load(w.ws)
    headers, rows = ev.table1(summary)
    paired = ev.paper_pairs(summary)
    assert paired and "the paper's pairing" in html
    for label, values in rows:
        assert label in html
        for header, v in zip(headers, values):
            assert f">{100 * v:.1f}{'*' if (label, header) in paired else ''}<" in html
    assert "T(1)" in html and "T(2)" in html and "per-image mean mIoU" in html  # round 0's set is T(1), round 1's T(2)
    assert "trained on" in html and "S(0) + S(1) + S(2) (mad)" in html  # the version fine-tuned in round 1
    assert "<span>T(2) labelled</span>" in html and "in S(2) (lowest MOS)" in html
    assert f"<b>{len(w.ids)}</b><span>candidates M(1)</span>" in html
    assert "Krippendorff" in html and "ann" in html and "bob" in html
    assert "No fine-tuning yet" not in html and "No evaluation yet" not in html
    assert "target@ft-r1" in html and "winner" in html
    for name, color in zip(world.CLASSES, w.config.colors):
        assert f"rgb{tuple(color)}" in html and name in html
    assert "http://" not in html and "https://" not in html


def test_report_of_a_fresh_round_says_what_is_missing(tmp_path, browser):
    w = world.build(tmp_path / "w", n=12)
    out = Path(write_report(w.config, w.ws, 3))
    assert out.name == "round-3.html" and out.parent.name == "reports"
    html = out.read_text()
    assert "No MAD candidates for round 3" in html and "No evaluation yet" in html and "No fine-tuning yet" in html
    page, problems = open_report(browser, out)
    assert page.evaluate(CHECK_IMAGES) == [] and problems == []


def screenshot(out: Path) -> None:
    """docs/report.png: the report of a round of larger pictures (first screens of the page)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        w = world.full_round(Path(tmp) / "w", n=60, big=True)
        html = Path(tmp) / "report.html"
        write_report(w.config, w.ws, w.round, html)
        with chromium() as browser:
            page, problems = open_report(browser, html, height=2600)
            if problems or not all(i["ok"] for i in page.evaluate(CHECK_IMAGES)):
                raise SystemExit(f"report does not render cleanly: {problems}")
            page.screenshot(path=str(out))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))
    screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/report.png"))


def test_report_shows_what_each_version_fixed_and_broke(tmp_path):
    from madmine import metrics
    from madmine.steps import repair
    from madmine.steps.report import render_report

    w = world.build(tmp_path / "w", n=12)
    assert "No repair figures yet" in render_report(w.config, w.ws, 1)
    version = {"model": "target", "model_version": "ft-r1", "parent_version": "p0", "selection": "mad", "round": 1}
    counts = metrics.repair([0.1, 0.2, 0.3, 0.9, 0.8], [0.6, 0.2, 0.7, 0.4, 0.9], 0.5)  # fixed 2 of 3, broke 1 of 2
    repair.write(w.ws, [repair.row(version, "V", counts, repair.FINETUNE)], repair.finetune_part("target", 1, "mad"))
    html = render_report(w.config, w.ws, 1)
    section = html[html.index('id="repair"'):]
    assert "target@ft-r1" in section and "p0" in section and ">V<" in section
    low, high = metrics.wilson_interval(2, 3)
    assert f"2 of 3 (67%; {100 * low:.0f}-{100 * high:.0f}%)" in section and "1 of 2 (50%;" in section
    assert "0.460 -&gt; 0.560" in section or "0.460 -> 0.560" in section
