"""`madmine nightly`: the unattended run under a workspace lock."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from madmine.cli import state as cli_state

console = Console(stderr=True)


def nightly(
    sources: list[str] = typer.Argument(None, help="What to ingest (default: [nightly] sources)."),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)."),
) -> None:
    """Unattended run under a workspace lock: ingest what is new, score only new images, refresh the selection."""
    from madmine.lock import LockHeld
    from madmine.pipeline.nightly import nightly as run_nightly

    try:
        summary = run_nightly(cli_state.get_config(), sources, ray_address=ray_address, show_progress=sys.stderr.isatty())
    except LockHeld as exc:  # not a failure: the other run does the work
        console.print(f"nightly: {exc}")
        return
    for line in summary.lines():
        console.print(line)


def register(app: typer.Typer) -> None:
    app.command("nightly")(nightly)
