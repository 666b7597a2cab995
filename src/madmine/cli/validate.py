"""`madmine validate`: the config and every model checked before any work."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from madmine.cli import state as cli_state


def validate() -> None:
    """Check the config and build every model once (weights, class counts), then print the models."""
    from madmine.models import check_models

    config = cli_state.get_config()
    versions = check_models(config)
    table = Table(title=f"{cli_state.config_path()}: OK")
    for col in ("model", "role", "source", "input", "version"):
        table.add_column(col)
    for m in config.models:
        source = m.arch or m.factory or m.maps
        table.add_row(m.name, m.role, source, str(m.input_size) if m.is_network else "own size", versions[m.name])
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
