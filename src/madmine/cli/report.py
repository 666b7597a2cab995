"""`madmine report --round R`: one self-contained HTML page of a round (thin)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from madmine.cli.state import get_config

out = Console()


def report(
    round_: int = typer.Option(..., "--round", "-r", help="The round to report on."),
    out_file: Path = typer.Option(None, "--out", help="HTML file; default <workspace>/reports/round-<R>.html."),
) -> None:
    """One self-contained HTML page of the round: numbers, Table 1, candidates, ratings, fine-tuning, SRCC."""
    from madmine.steps.context import StepContext
    from madmine.steps.report import ReportParams, run

    where = run(StepContext.of(get_config()), ReportParams(round_, out_file))
    out.print(f"report of round {round_}: {where}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
