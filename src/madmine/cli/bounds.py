"""`madmine bounds LABELS_DIR`: size bounds per class from the labelled training set."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from madmine.cli.state import get_config, user_errors


@user_errors
def bounds(
    labels: str = typer.Argument(..., help="Folder or s3:// prefix of PNG label maps (class index per pixel, 255 = ignore)."),
    workers: int = typer.Option(4, help="Parallel label readers."),
    split: str = typer.Option(
        None, "--list", help="Only the labels this split list names: a text file of file stems, one per line (VOC: "
        "ImageSets/Segmentation/train.txt, the training split S(0); the folder also holds val)."
    ),
) -> None:
    """Size bounds per class: quartiles of area fractions over the labelled training set S(0) -> tables/bounds."""
    from madmine.steps.bounds import BoundsParams, run
    from madmine.steps.context import StepContext

    result = run(StepContext.of(get_config()), BoundsParams(labels, workers=workers, split=split))
    console = Console()
    which = f" named by {escape(split)}" if split else ""
    console.print(f"bounds from {result.labels} label maps{which} -> {escape(result.path)}")
    table = Table()
    for col in ("class", "p", "q", "images"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in result.table.to_pylist():
        p, q = row["p"], row["q"]
        table.add_row(
            row["class_name"],
            "-" if p is None else f"{p:.4f}",
            "-" if q is None else f"{q:.4f}",
            str(row["n_images"]),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("bounds")(bounds)
