"""`madmine compete A B`: a MAD competition between two model versions (the paper's Table 2; thin)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from madmine.cli.evaluate import pct
from madmine.cli.state import get_config
from madmine.workspace import Workspace

out = Console()
err = Console(stderr=True)


def compete(
    model_a: str = typer.Argument(..., help="NAME (the config's version) or NAME@VERSION (models table)."),
    model_b: str = typer.Argument(..., help="The other model."),
    n: int = typer.Option(None, "--n", help="Images to select by d(A, B); default \\[evaluate] compete_n (30)."),
    reselect: bool = typer.Option(False, "--reselect", help="Select again although a selection exists."),
    export_dir: Path = typer.Option(None, "--export", help="Write the images waiting for labels here, for an annotation tool."),
    fmt: str = typer.Option("labelstudio", "--format", "-f", help="labelstudio | cvat | coco (with --export)."),
) -> None:
    """A MAD competition: the images where A and B disagree most, both scored on their labels (Table 2)."""
    from madmine.steps.evaluation.compete import compete as run
    from madmine.steps.evaluation.compete import export

    config = get_config()
    ws = Workspace.from_config(config)
    comp = run(config, ws, model_a, model_b, n=n, reselect=reselect)
    how = "kept from the saved selection" if comp.reused else f"selected from a pool of {comp.pool}"
    out.print(f"competition {comp.id}: {len(comp.selection)} images by d ({how})", highlight=False)
    table = Table(title="Table 2: MAD competition", caption=f"{len(comp.labelled)} labelled of {len(comp.selection)} selected images")
    table.add_column("model")
    for col in ("dataset mIoU (%)", "per-image mean mIoU (%)", "images won"):
        table.add_column(col, justify="right")
    table.add_row(comp.a.label, pct(comp.miou_a), pct(comp.per_image_a), str(comp.wins_a))
    table.add_row(comp.b.label, pct(comp.miou_b), pct(comp.per_image_b), str(comp.wins_b))
    out.print(table)
    if comp.winner:
        out.print(f"winner: [bold]{comp.winner}[/]", highlight=False)
    elif comp.labelled:
        out.print("no winner: equal mIoU", highlight=False)
    if comp.waiting:
        err.print(f"{len(comp.waiting)} image(s) wait for annotation: " + ", ".join(comp.waiting[:10])
                  + (" ..." if len(comp.waiting) > 10 else ""), highlight=False)
        if export_dir is None:
            err.print("export them with --export DIR --format labelstudio|cvat|coco, then `madmine annotate import`", highlight=False)
    if export_dir is not None and comp.waiting:
        count, files = export(config, ws, comp, fmt, export_dir)
        out.print(f"exported {count} images to {export_dir}: " + ", ".join(str(f) for f in files), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("compete")(compete)
