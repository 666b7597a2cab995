"""`madmine testset | evaluate | compete | report`: measuring a round's progress (thin)."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from madmine.cli_state import get_config

out = Console()
err = Console(stderr=True)
REASONS = {
    "out_of_domain": "out of domain",
    "in_s": "in some S(j)",
    "in_other_testset": "in another round's test set",
    "unrated": "short of raters",
    "no_class": "without a foreground class",
}


def register(app: typer.Typer) -> None:
    app.command("testset")(testset)
    app.command("evaluate")(evaluate)
    app.command("compete")(compete)
    app.command("report")(report)


def _workspace(config):
    from madmine.workspace import Workspace

    return Workspace.from_config(config)


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def testset(
    round_: int = typer.Option(..., "--round", "-r", help="Round R: T(R) is drawn from its MAD candidates M(R)."),
    size: int = typer.Option(None, "--size", help="Images in T(R); default \\[evaluate] testset_size (30)."),
    per_class: int = typer.Option(None, "--per-class", help="At most this many images per main class; default 4."),
    seed: int = typer.Option(None, "--seed", help="Seed of the draw; default \\[evaluate] seed."),
    without_s: bool = typer.Option(False, "--without-s", help="Draw T(R) before S(R) is selected."),
    force: bool = typer.Option(False, "--force", help="Draw T(R) again although it exists (its labels may go to waste)."),
) -> None:
    """T(R) from M(R): out of domain removed, never in any S(j), <= 4 per main class, 30 images."""
    from madmine.evaluation.testset import build

    config = get_config()
    ws = _workspace(config)
    result = build(config, ws, round_, size=size, per_class=per_class, seed=seed, require_s=not without_s, overwrite=force)
    out.print(f"T({round_}): {result.size} of {result.candidates} candidates -> {result.path}", highlight=False)
    out.print("per main class: " + ", ".join(f"{k} {v}" for k, v in result.per_class.items()), highlight=False)
    left = {REASONS.get(k, k): len(v) for k, v in result.dropped.items()}
    if result.capped:
        left["over the per-class cap"] = result.capped
    if left:
        out.print("left out: " + ", ".join(f"{v} {k}" for k, v in left.items()), highlight=False)
    wanted = config.evaluate.testset_size if size is None else size
    if result.size < wanted:
        err.print(f"[yellow]T({round_}) has {result.size} images, fewer than {wanted}[/]: rate more candidates or relax --per-class")
    out.print(f"label it: madmine annotate export --set test --round {round_} --format labelstudio --out DIR", highlight=False)


def _table1(summary, value: str, title: str, caption: str) -> Table:
    from madmine.evaluation.evaluate import table1

    headers, rows = table1(summary, value)
    table = Table(title=title, caption=caption)
    table.add_column("model")
    for h in headers:
        table.add_column(h, justify="right")
    for label, values in rows:
        table.add_row(label, *(_pct(v) for v in values))
    return table


def evaluate(
    per_class: bool = typer.Option(False, "--per-class", help="Also print the IoU of every class."),
    quality: bool = typer.Option(True, "--quality/--no-quality", help="Selection quality where labelled images were scored."),
    run_id: str = typer.Option(None, "--run-id", help="Scoring run for selection quality; default the newest complete one."),
    tau: float = typer.Option(None, "--tau", help="A failure is a per-image mIoU below this; default \\[evaluate] tau (0.5)."),
    top_n: int = typer.Option(None, "--top-n", help="n of precision@n; default \\[evaluate] top_n (10)."),
    srcc_plot: Path = typer.Option(None, "--srcc-plot", help="Also save the ranking-stability plot (Fig. 7) as this PNG."),
) -> None:
    """Every model version on T(0) and every labelled T(R): Table 1, ranking stability, selection quality."""
    from madmine.evaluation import evaluate as ev
    from madmine.evaluation import quality as q
    from madmine.evaluation import srcc
    from madmine.evaluation.sources import testset_name

    config = get_config()
    ws = _workspace(config)
    result = ev.evaluate(config, ws)
    paths = ev.save(ws, result)
    summary = result.summary_table()
    out.print(_table1(summary, "miou", "Table 1: dataset mIoU (%)", "one confusion matrix per test set"))
    out.print(_table1(summary, "per_image_miou", "per-image mean mIoU (%)", "the mean of each image's own mIoU"))
    for row in summary.to_pylist():
        if row["error"]:
            err.print(f"[yellow]{row['label']} on {row['testset']}[/]: {row['error']}", highlight=False)
    for r, ids in result.waiting.items():
        if ids:
            err.print(f"{testset_name(r)}: {len(ids)} of {result.sizes[r]} images wait for labels: {', '.join(ids[:5])}"
                      + (" ..." if len(ids) > 5 else ""), highlight=False)
    if per_class:
        for r in result.rounds:
            table = Table(title=f"IoU per class (%) on {testset_name(r)}")
            table.add_column("model")
            for name in config.classes:
                table.add_column(name, justify="right")
            for ref in result.refs:
                cell = result.cell(ref, r)
                if cell.error or not cell.n_labelled:
                    continue
                table.add_row(ref.label, *(_pct(float(v)) for v in cell.iou))
            out.print(table)
    curves = srcc.curves(result.image_table())
    for c in curves:
        at = {k: v for k, v in zip(c.ks, c.srcc)}
        shown = [k for k in (5, 10, 15, 20, 25, 30) if k in at] or c.ks[-1:]
        out.print(f"SRCC with the full {testset_name(c.round)} ranking of {len(c.models)} models, first k images: "
                  + ", ".join(f"k={k}: {at[k]:.2f}" for k in shown), highlight=False)
    out.print(f"saved {paths[0]} and {paths[1]}", highlight=False)
    if srcc_plot is not None:
        if curves:
            from madmine.report.plots import png_bytes, srcc_figure

            srcc_plot.write_bytes(png_bytes(srcc_figure(curves)))
            out.print(f"SRCC plot: {srcc_plot}", highlight=False)
        else:
            err.print("no SRCC plot: it needs a labelled test set and two models evaluated on it", highlight=False)
    if not quality:
        return
    try:
        rows = q.selection_quality(config, ws, run_id=run_id, tau=tau, n=top_n)
    except ev.EvaluationError as exc:
        err.print(f"selection quality skipped: {exc}", highlight=False)
        return
    if not rows:
        err.print("selection quality: no labelled image was scored yet", highlight=False)
        return
    q.save(ws, rows)
    table = Table(title="selection quality", caption=f"{rows[0].pool} labelled images; failure: per-image mIoU < {rows[0].tau}")
    table.add_column("strategy")
    for col in ("failures", f"precision@{rows[0].n}", "AUROC", "AUPR", "base rate"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r.strategy, f"{r.failures}/{r.pool}", f"{r.precision_at_n:.2f}", f"{r.auroc:.3f}", f"{r.aupr:.3f}", f"{r.base_rate:.2f}")
    out.print(table)


def compete(
    model_a: str = typer.Argument(..., help="NAME (the config's version) or NAME@VERSION (models table)."),
    model_b: str = typer.Argument(..., help="The other model."),
    n: int = typer.Option(None, "--n", help="Images to select by d(A, B); default \\[evaluate] compete_n (30)."),
    reselect: bool = typer.Option(False, "--reselect", help="Select again although a selection exists."),
    export_dir: Path = typer.Option(None, "--export", help="Write the images waiting for labels here, for an annotation tool."),
    fmt: str = typer.Option("labelstudio", "--format", "-f", help="labelstudio | cvat | coco (with --export)."),
) -> None:
    """A MAD competition: the images where A and B disagree most, both scored on their labels (Table 2)."""
    from madmine.evaluation.compete import compete as run, export

    config = get_config()
    ws = _workspace(config)
    comp = run(config, ws, model_a, model_b, n=n, reselect=reselect)
    how = "kept from the saved selection" if comp.reused else f"selected from a pool of {comp.pool}"
    out.print(f"competition {comp.id}: {len(comp.selection)} images by d ({how})", highlight=False)
    table = Table(title="Table 2: MAD competition", caption=f"{len(comp.labelled)} labelled of {len(comp.selection)} selected images")
    table.add_column("model")
    for col in ("dataset mIoU (%)", "per-image mean mIoU (%)", "images won"):
        table.add_column(col, justify="right")
    table.add_row(comp.a.label, _pct(comp.miou_a), _pct(comp.per_image_a), str(comp.wins_a))
    table.add_row(comp.b.label, _pct(comp.miou_b), _pct(comp.per_image_b), str(comp.wins_b))
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


def report(
    round_: int = typer.Option(..., "--round", "-r", help="The round to report on."),
    out_file: Path = typer.Option(None, "--out", help="HTML file; default <workspace>/reports/round-<R>.html."),
) -> None:
    """One self-contained HTML page of the round: numbers, Table 1, candidates, ratings, fine-tuning, SRCC."""
    from madmine.report import write_report

    config = get_config()
    where = write_report(config, _workspace(config), round_, out_file)
    out.print(f"report of round {round_}: {where}", highlight=False)
