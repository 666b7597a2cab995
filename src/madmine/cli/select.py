"""`madmine select --round R`: the round's candidates M, and the summary a user checks before rating."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from madmine.cli.state import get_config, user_errors

err = Console(stderr=True)


@user_errors
def select(
    round_: int = typer.Option(..., "--round", "-r", help="Round number (0 = first)."),
    strategy: str = typer.Option("mad", help="mad; a baseline with MAD's budget: entropy, msp, random; "
                                "learned (MAD's budget, by a failure predictor fitted on earlier rounds' ratings) "
                                "or hybrid (MAD's groups ranked by that predictor)."),
    n3: int = typer.Option(None, "--n3", help="Images kept per (competitor, direction, class) group \\[selection] n3."),
    run_id: str = typer.Option(None, "--run-id", help="Scoring run to select from (default: newest complete)."),
    classes: list[str] = typer.Option(None, "--class", help="Only these classes form groups (repeatable)."),
    out: str = typer.Option(None, "--out", help="Also write the candidates table to this Parquet file."),
) -> None:
    """Select the round's likely failures (top n3 by discrepancy per group) -> tables/candidates."""
    from madmine.steps.context import StepContext
    from madmine.steps.select import SelectParams, run

    params = SelectParams(round_, strategy=strategy, n3=n3, run_id=run_id, classes=tuple(classes) if classes else None,
                          out=out)
    with err.status("select") as status:
        ctx = StepContext.of(get_config(), say=lambda text: status.update(f"select: {text}"))
        result = run(ctx, params)
    print_summary(result)


def print_summary(result) -> None:
    """|M|, per-class counts, overlaps, exclusions: what a user checks before rating."""
    from madmine.steps.select import summarize

    console = Console()
    budget = f", budget {result.budget} = |M| of mad" if result.budget is not None else f", n3 = {result.n3}"
    console.print(
        f"select round {result.round} ({result.strategy}{budget}) from run [bold]{escape(result.run_id)}[/]: "
        f"[bold green]|M| = {result.num_images}[/] images in {result.num_rows} rows -> {escape(result.path)}"
    )
    if result.trained is not None:
        console.print("failure predictor: " + escape(result.trained.describe()), highlight=False)
    excluded = ", ".join(f"{n} {reason}" for reason, n in result.excluded.items() if n)
    console.print(
        f"{result.scored_images} images scored; {result.excluded_images} excluded before ranking"
        + (f" ({excluded})" if excluded else "")
    )
    if result.num_rows == 0:
        console.print(
            "[yellow]warning:[/] no image was selected: check the bounds (`madmine sql \"FROM bounds\"`) "
            "and that the run has discrepancies"
        )
        return
    summary = summarize(result.table)
    per_class = Table(title="per class (images)")
    for col in ("class", "images", "by target map", "by competitor map"):
        per_class.add_column(col, justify="left" if col == "class" else "right")
    for name, images, by_target, by_competitor in summary.per_class:
        per_class.add_row(name, str(images), str(by_target), str(by_competitor))
    console.print(per_class)
    if not summary.per_competitor:
        return
    per_comp = Table(title="per competitor (images)")
    for col in ("competitor", "images", "by target map", "by competitor map", "both directions"):
        per_comp.add_column(col, justify="left" if col == "competitor" else "right")
    for row in summary.per_competitor:
        per_comp.add_row(*(str(v) for v in row))
    console.print(per_comp)
    console.print(f"{summary.both_directions} images were selected in both directions (by a target map and a competitor map)")
    if summary.competitor_overlap:
        names = [row[0] for row in summary.per_competitor]
        overlap = Table(title="overlap (images)")
        overlap.add_column("")
        for name in names:
            overlap.add_column(name, justify="right")
        for a in names:
            cells = []
            for b in names:
                key = (a, b) if (a, b) in summary.competitor_overlap else (b, a)
                cells.append("-" if a == b else str(summary.competitor_overlap[key]))
            overlap.add_row(a, *cells)
        console.print(overlap)


def register(app: typer.Typer) -> None:
    app.command("select")(select)
