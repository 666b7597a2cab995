"""`madmine compete A B`: a MAD competition between two model versions (the paper's Table 2; thin)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from madmine.cli.evaluate import pct
from madmine.cli.state import get_config, user_errors

out = Console()
err = Console(stderr=True)


@user_errors
def compete(
    model_a: str = typer.Argument(..., help="NAME (the config's version), NAME@VERSION, or NAME@STRATEGY such as "
                                  "target@mad or target@entropy (the newest version fine-tuned on that strategy's S)."),
    model_b: str = typer.Argument(..., help="The other model."),
    protocol: str = typer.Option(
        None, "--protocol", help="mad: per class by each model's map, size bounds, top n per group, raters' "
        "out-of-domain veto, neither model's training images (the paper's); d-ranking: the top n of the whole pool "
        "by d(A, B) (a cheaper proxy). Default \\[evaluate] compete_protocol (mad)."
    ),
    n: int = typer.Option(None, "--n", help="mad: images per (model, class) group, default \\[evaluate] compete_per_class "
                          "(2); d-ranking: images in all, default \\[evaluate] compete_n (30)."),
    reselect: bool = typer.Option(False, "--reselect", help="Select again although a selection exists."),
    export_dir: Path = typer.Option(None, "--export", help="Write the images waiting for labels here, for an annotation tool."),
    fmt: str = typer.Option("labelstudio", "--format", "-f", help="labelstudio | cvat | coco (with --export)."),
    prefill: str = typer.Option(
        None, "--prefill", help="With --export: start every mask from this model's prediction (a, b, or any model). "
        "Default: blank masks; a pre-filled mask pulls the labels toward the model that drew it."
    ),
) -> None:
    """A MAD competition: the images where A and B disagree most, both scored on their labels (Table 2)."""
    from madmine.steps.context import StepContext
    from madmine.steps.evaluation.compete import CompeteParams, export, run

    ctx = StepContext.of(get_config())
    config, ws = ctx.config, ctx.ws
    comp = run(ctx, CompeteParams(model_a, model_b, n=n, reselect=reselect, protocol=protocol))
    how = "kept from the saved selection" if comp.reused else f"selected from a pool of {comp.pool}"
    what = "per class and partitioning model, inside the size bounds" if comp.protocol == "mad" else "by d over the pool"
    out.print(f"competition {comp.id} ({comp.protocol}): {len(comp.selection)} images {what} ({how})", highlight=False)
    if comp.protocol == "mad":
        out.print(f"raters: {len(comp.vetoed)} vetoed as out of domain, {len(comp.waiting_raters)} short of "
                  f"{comp.min_raters} vote(s)", highlight=False)
    table = Table(title="Table 2: MAD competition", caption=f"{len(comp.labelled)} labelled of {len(comp.selection)} selected images")
    table.add_column("model")
    table.add_column("trained on")
    for col in ("dataset mIoU (%)", "per-image mean mIoU (%)", "images won"):
        table.add_column(col, justify="right")
    table.add_row(comp.a.label, comp.a.trained_on, pct(comp.miou_a), pct(comp.per_image_a), str(comp.wins_a))
    table.add_row(comp.b.label, comp.b.trained_on, pct(comp.miou_b), pct(comp.per_image_b), str(comp.wins_b))
    out.print(table)
    if comp.labelled:
        out.print(f"dataset mIoU A - B: {pct(comp.miou_a - comp.miou_b)} points, 95% interval over the images "
                  f"{pct(comp.diff_low)} .. {pct(comp.diff_high)}; images won {comp.wins_a}:{comp.wins_b} "
                  f"(sign test p = {comp.sign_p:.3f})", highlight=False)
    if comp.winner:
        out.print(f"winner: [bold]{comp.winner}[/]", highlight=False)
    elif comp.labelled:
        out.print("no winner: the 95% interval of the difference holds 0 (label more images, or call it a tie)",
                  highlight=False)
    if comp.waiting_raters:
        err.print(f"{len(comp.waiting_raters)} image(s) wait for raters (one out-of-domain vote drops an image): "
                  f"madmine rate serve --competition {comp.id}", highlight=False)
    if comp.waiting:
        err.print(f"{len(comp.waiting)} image(s) wait for annotation: " + ", ".join(comp.waiting[:10])
                  + (" ..." if len(comp.waiting) > 10 else ""), highlight=False)
        if export_dir is None:
            err.print("export them with --export DIR --format labelstudio|cvat|coco (blank masks), then "
                      "`madmine annotate import`", highlight=False)
    if export_dir is not None and comp.waiting:
        count, files = export(config, ws, comp, fmt, export_dir, prefill=prefill)
        out.print(f"exported {count} images to {export_dir}: " + ", ".join(str(f) for f in files), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("compete")(compete)
