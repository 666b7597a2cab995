"""`madmine testset | evaluate`: unbiased test sets and every model version on them (thin)."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from madmine.cli.state import get_config

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


def pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def testset(
    round_: int = typer.Option(..., "--round", "-r", help="Round R: T(R+1) is drawn from its MAD candidates M(R)."),
    size: int = typer.Option(None, "--size", help="Images in T(R+1); default \\[evaluate] testset_size (30)."),
    per_class: int = typer.Option(None, "--per-class", help="At most this many images per main class; default 4."),
    seed: int = typer.Option(None, "--seed", help="Seed of the draw; default \\[evaluate] seed."),
    without_s: bool = typer.Option(False, "--without-s", help="Draw T(R+1) before S(R+1) is selected (a final round)."),
    force: bool = typer.Option(False, "--force", help="Draw again although it exists (its labels may go to waste)."),
) -> None:
    """T(R+1) from M(R), the paper's names (T(0) is the held-out set): out of domain removed, never in any S(j),
    <= 4 per main class, 30 images."""
    from madmine.names import testset_name
    from madmine.steps.context import StepContext
    from madmine.steps.evaluation.testset import TestsetParams, run

    config = get_config()
    params = TestsetParams(round_, size=size, per_class=per_class, seed=seed, require_s=not without_s, overwrite=force)
    result = run(StepContext.of(config), params)
    name = testset_name(round_)
    out.print(f"{name} (round {round_}): {result.size} of {result.candidates} candidates -> {result.path}", highlight=False)
    out.print("per main class: " + ", ".join(f"{k} {v}" for k, v in result.per_class.items()), highlight=False)
    left = {REASONS.get(k, k): len(v) for k, v in result.dropped.items()}
    if result.capped:
        left["over the per-class cap"] = result.capped
    if left:
        out.print("left out: " + ", ".join(f"{v} {k}" for k, v in left.items()), highlight=False)
    wanted = config.evaluate.testset_size if size is None else size
    if result.size < wanted:
        err.print(f"[yellow]{name} has {result.size} images, fewer than {wanted}[/]: rate more candidates or relax --per-class")
    out.print(f"label it (blank masks): madmine annotate export --set test --round {round_} --format labelstudio --out DIR",
              highlight=False)


def _table1(summary, value: str, title: str, caption: str) -> Table:
    from madmine.steps.evaluation.evaluate import table1

    headers, rows = table1(summary, value)
    trained = {r["label"]: r.get("trained_on") or "" for r in summary.to_pylist()}
    table = Table(title=title, caption=caption)
    table.add_column("model")
    table.add_column("trained on")
    for h in headers:
        table.add_column(h, justify="right")
    for label, values in rows:
        table.add_row(label, trained.get(label, ""), *(pct(v) for v in values))
    return table


def _repair_table(rows: list[dict], tau: float) -> Table:
    """What each fine-tuned version fixed and broke against its parent on each test set."""
    from madmine.steps.repair import cells

    table = Table(title="repair: each fine-tuned version against its parent",
                  caption=f"a failure: per-image mIoU < {tau}; (share; 95% Wilson interval)")
    for col in ("version", "from", "set", "fixed failures", "broke passing images", "per-image mIoU"):
        table.add_column(col, justify="left" if col in ("version", "from", "set") else "right")
    for r in rows:
        table.add_row(f"{r['model']}@{r['model_version']}", r["parent_version"], r["set"], *cells(r))
    return table


def evaluate(
    per_class: bool = typer.Option(False, "--per-class", help="Also print the IoU of every class."),
    quality: bool = typer.Option(True, "--quality/--no-quality", help="Selection quality where labelled images were scored."),
    run_id: str = typer.Option(None, "--run-id", help="Scoring run for selection quality; default the newest complete one."),
    tau: float = typer.Option(None, "--tau", help="A failure is a per-image mIoU below this; default \\[evaluate] tau (0.5)."),
    top_n: int = typer.Option(None, "--top-n", help="n of precision@n; default \\[evaluate] top_n (10)."),
    srcc_plot: Path = typer.Option(None, "--srcc-plot", help="Also save the ranking-stability plot (Fig. 7) as this PNG."),
    srcc_reference: int = typer.Option(
        None, "--srcc-reference", help="Rank the models on the first N test images as the reference (Fig. 7: 40); "
        "default: every labelled image of the set."
    ),
    srcc_k: str = typer.Option(None, "--srcc-k", help="The k to compare with the reference: A..B or a list (Fig. 7: 20..39)."),
    srcc_draws: int = typer.Option(
        0, "--srcc-draws", help="Mean SRCC over this many random k-subsets of the reference (0: its first k images)."
    ),
) -> None:
    """Every model version on T(0) and every labelled T(i): Table 1, ranking stability, selection quality."""
    from madmine.names import testset_name
    from madmine.steps.context import StepContext
    from madmine.steps.evaluation.run import EvaluateParams, run

    config = get_config()
    params = EvaluateParams(quality=quality, run_id=run_id, tau=tau, top_n=top_n, srcc_reference=srcc_reference,
                            srcc_k=srcc_k, srcc_draws=srcc_draws)
    evaluated = run(StepContext.of(config, show_progress=err.is_terminal), params)
    result, paths, curves = evaluated.evaluation, evaluated.paths, evaluated.curves
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
                table.add_row(ref.label, *(pct(float(v)) for v in cell.iou))
            out.print(table)
    ks = curves[0].ks if curves and srcc_k else None
    for c in curves:
        at = {k: v for k, v in zip(c.ks, c.srcc)}
        shown = ([k for k in (5, 10, 15, 20, 25, 30) if k in at] if ks is None else c.ks) or c.ks[-1:]
        how = "first k images" if srcc_draws <= 0 else f"mean over {srcc_draws} random k-subsets"
        out.print(f"SRCC with the {testset_name(c.round)} ranking of {len(c.models)} models on {c.reference} images, {how}: "
                  + ", ".join(f"k={k}: {at[k]:.2f}" for k in shown), highlight=False)
    if srcc_reference is not None and not curves:
        err.print(f"no test set has {srcc_reference} labelled images scored for two models: no SRCC curve "
                  "(draw a larger one with `madmine testset --size`)", highlight=False)
    if evaluated.repair:
        out.print(_repair_table(evaluated.repair, config.evaluate.tau if tau is None else tau))
    out.print(f"saved {paths[0]} and {paths[1]}", highlight=False)
    if srcc_plot is not None:
        if curves:
            from madmine.steps.report.plots import png_bytes, srcc_figure

            srcc_plot.write_bytes(png_bytes(srcc_figure(curves)))
            out.print(f"SRCC plot: {srcc_plot}", highlight=False)
        else:
            err.print("no SRCC plot: it needs a labelled test set and two models evaluated on it", highlight=False)
    if not quality:
        return
    rows = evaluated.quality
    if evaluated.quality_skipped:
        err.print(f"selection quality skipped: {evaluated.quality_skipped}", highlight=False)
        return
    table = Table(title="selection quality", caption=f"{rows[0].pool} labelled images; failure: per-image mIoU < {rows[0].tau}")
    table.add_column("strategy")
    for col in ("failures", f"precision@{rows[0].n}", "AUROC", "AUPR", "base rate"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r.strategy, f"{r.failures}/{r.pool}", f"{r.precision_at_n:.2f}", f"{r.auroc:.3f}", f"{r.aupr:.3f}", f"{r.base_rate:.2f}")
    out.print(table)
