"""`madmine validate`: the config and every model checked before any work."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from madmine.cli import state as cli_state


def _classes(names: list[str], total: int) -> str:
    if len(names) == total:
        return f"all {total}"
    return f"{len(names)} of {total}: " + ", ".join(names) if names else f"none of {total}"


def validate() -> None:
    """Check the config and build every model once (weights, class counts, class maps), then print the models."""
    from madmine.models.registry import inspect_models

    config = cli_state.get_config()
    reports = inspect_models(config)
    table = Table(title=f"{cli_state.config_path()}: OK")
    for col in ("model", "role", "kind", "source", "classes", "class map", "predicts", "never predicts", "input",
                "precision", "device", "trainable", "version"):
        table.add_column(col, overflow="fold")
    for r in reports:
        table.add_row(
            r.name, r.role, r.kind, r.source, "?" if r.model_classes is None else str(r.model_classes), r.class_map,
            _classes(r.predicted, config.num_classes), ", ".join(r.never) or "-", r.input_size, r.precision, r.device,
            "yes" if r.trainable else "no", r.version,
        )
    Console(width=max(Console().width, 160)).print(table)
    partial = [r for r in reports if r.never]
    for r in partial:
        Console().print(
            f"note: {r.name} never predicts {', '.join(r.never)}: where the target predicts them, its pairs count "
            "disagreement (I = 0) unless it maps those pixels to ignore, so d with it runs high on such images "
            "(docs/models.md)"
        )


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
