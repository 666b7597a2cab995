"""The round report: one self-contained HTML page (images and plots embedded) with the
round's numbers, Table 1, ranking stability, competitions, selection quality, candidates per
class, a gallery of the top candidates, ratings and agreement, and fine-tuning curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from madmine.config import Config
from madmine.steps.context import StepContext
from madmine.steps.report import facts, gallery, page
from madmine.workspace import Workspace, write_atomic


@dataclass(frozen=True)
class ReportParams:
    round: int
    out: Path | None = None  # default: <workspace>/reports/round-<R>.html


def run(ctx: StepContext, params: ReportParams) -> str:
    """The report step: the round's page, written atomically; returns where."""
    return write_report(ctx.config, ctx.ws, params.round, params.out)


def render_report(config: Config, ws: Workspace, round_: int) -> str:
    f = facts.gather(config, ws, round_)
    tiles, problems = gallery.tiles(config, ws, round_, f.candidates, f.mos, config.evaluate.gallery)
    return page.render(config, f, tiles, problems, config.workspace_uri)


def write_report(config: Config, ws: Workspace, round_: int, out: Path | None = None) -> str:
    """Write the page (atomically) to `out`, or to <workspace>/reports/round-<R>.html; returns where."""
    html = render_report(config, ws, round_).encode("utf-8")
    if out is None:
        path = ws.path("reports", f"round-{round_}.html")
        ws.put_bytes(path, html)
        return ws.url(path)
    write_atomic(str(out), html)
    return str(out)
