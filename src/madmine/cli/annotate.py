"""`madmine annotate export | import`: pixel labels through the annotation tools people use (thin)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from madmine.cli import state as cli_state
from madmine.cli.rate import RoundOpt, StrategyOpt
from madmine.workspace import Workspace

out = Console()
err = Console(stderr=True)
annotate_app = typer.Typer(
    help="Pixel labels: export S to Label Studio, CVAT or COCO with the target's prediction, import the results.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(annotate_app, name="annotate")


@annotate_app.command("export")
def export_cmd(
    fmt: str = typer.Option(..., "--format", "-f", help="labelstudio | cvat | coco"),
    out_dir: Path = typer.Option(..., "--out", help="A new (or empty) folder."),
    round_: int = RoundOpt,
    which: str = typer.Option("s", "--set", help="s: the images of lowest MOS; test: the round's test set."),
    strategy: str = StrategyOpt,
    document_root: Path = typer.Option(
        None, help="Label Studio only: the server's LOCAL_FILES_DOCUMENT_ROOT, a folder above --out (default: its parent)."
    ),
    image_prefix: str = typer.Option(
        None, help="Label Studio only: URL prefix of the images when they are served elsewhere (no local-files storage)."
    ),
) -> None:
    """Images + the target's prediction as a pre-annotation, in the tool's own format."""
    from madmine.steps.annotation.exchange import export
    from madmine.steps.rating.roundset import latest_round

    config = cli_state.get_config()
    ws = Workspace.from_config(config)
    round_ = latest_round(ws, strategy) if round_ is None else round_
    count, files = export(ws, config, fmt, out_dir, round_, which, strategy, image_prefix, document_root)
    out.print(f"exported {count} images of round {round_} (set {which}) to {out_dir}:", highlight=False)
    for f in files:
        out.print(f"  {f}", highlight=False)
    if fmt == "labelstudio":
        out.print(f"next: follow {out_dir / 'README.md'} (or `madmine annotate push --to labelstudio`)", highlight=False)


@annotate_app.command("import")
def import_cmd(
    path: Path = typer.Argument(..., help="The tool's export: a file, a folder, or (CVAT) a .zip."),
    fmt: str = typer.Option(..., "--format", "-f", help="labelstudio | cvat | coco"),
    round_: int = typer.Option(None, "--round", "-r", help="Round of the labels; default: from madmine-export.json."),
    require_all: bool = typer.Option(False, help="Fail unless every exported image has a finished annotation."),
) -> None:
    """Finished annotations -> labels/<image_id>.png (255 = ignore) and the `labels` table; all or nothing."""
    from madmine.steps.annotation.exchange import import_, unknown_round_warning

    config = cli_state.get_config()
    table, unfinished = import_(Workspace.from_config(config), config, fmt, path, round_, require_all)
    out.print(f"imported {table.num_rows} label masks from {path}", highlight=False)
    if table.column("round").null_count:
        err.print(f"[yellow]warning:[/] {unknown_round_warning(path)}", highlight=False)
    if unfinished:
        err.print(f"[yellow]{unfinished} image(s) have no finished annotation yet[/]; import again when they do")
