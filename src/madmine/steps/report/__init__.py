"""The round report: one self-contained HTML page (images and plots embedded) with the
round's numbers, Table 1, ranking stability, competitions, selection quality, candidates per
class, a gallery of the top candidates, ratings and agreement, and fine-tuning curves."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from madmine.config import Config
from madmine.workspace import Workspace


def render_report(config: Config, ws: Workspace, round_: int) -> str:
    from madmine.steps.report import facts, gallery, page

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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".tmp-{out.name}")
    with os.fdopen(fd, "wb") as fh:
        fh.write(html)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return str(out)
