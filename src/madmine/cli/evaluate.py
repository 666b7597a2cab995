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
    app.command("sample")(sample)
    app.command("evaluate")(evaluate)


def pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def testset(
    round_: int = typer.Option(..., "--round", "-r", help="Round R: T(R+1) is drawn from its MAD candidates M(R)."),
    size: int = typer.Option(None, "--size", help="Images in T(R+1); default \\[evaluate] testset_size (30)."),
    per_class: int = typer.Option(None, "--per-class", help="At most this many images per main class; default 4."),
    seed: int = typer.Option(None, "--seed", help="Seed of the draw; default \\[evaluate] seed."),
    after_s: bool = typer.Option(
        False, "--after-s", help="Draw T(R+1) although S(R+1) was chosen first: it cannot take S's images, the lowest "
        "MOS of M, and leans toward images the target does well on (the round draws T before S)."
    ),
    force: bool = typer.Option(False, "--force", help="Draw again although it exists (its labels may go to waste)."),
) -> None:
    """T(R+1) from M(R), drawn before S(R+1) (T(0) is the held-out set): out of domain removed, never in an
    earlier S(j), <= 4 per main class, 30 images; S(R+1) is then chosen from the rest of M(R)."""
    from madmine.names import testset_name
    from madmine.steps.context import StepContext
    from madmine.steps.evaluation.testset import TestsetParams, run

    config = get_config()
    params = TestsetParams(round_, size=size, per_class=per_class, seed=seed, after_s=after_s, overwrite=force)
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
    from madmine.steps.evaluation.evaluate import paper_pairs, table1

    headers, rows = table1(summary, value)
    trained = {r["label"]: r.get("trained_on") or "" for r in summary.to_pylist()}
    paired = paper_pairs(summary)
    table = Table(title=title, caption=caption + ("; * the paper's pairing: f(i) on T(i+1)" if paired else ""))
    table.add_column("model")
    table.add_column("trained on")
    for h in headers:
        table.add_column(h, justify="right")
    for label, values in rows:
        cells = [pct(v) + ("*" if (label, h) in paired else "") for h, v in zip(headers, values)]
        table.add_row(label, trained.get(label, ""), *cells)
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
    selectors: bool = typer.Option(
        False, "--selectors", help="Also judge every selector (d, entropy, max-softmax, MAD, learned, hybrid, random) "
        "over the labelled images of the corpus sample (`madmine sample`): AUROC, AUPR-Error, FPR@95%TPR, Spearman, "
        "precision at |M| and n4, with 95% intervals."
    ),
    round_: int = typer.Option(None, "--round", "-r", help="With --selectors: the round whose run is judged (default: "
                               "the newest with MAD candidates)."),
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
    if selectors:
        from madmine import tables
        from madmine.steps.evaluation.selectors import SelectorsParams
        from madmine.steps.evaluation.selectors import run as judge

        ctx = StepContext.of(config)
        rounds = tables.CANDIDATES.rounds(ctx.ws, strategy="mad")
        chosen = round_ if round_ is not None else (rounds[-1] if rounds else 0)
        Console(width=max(out.width, 170)).print(selectors_table(judge(ctx, SelectorsParams(chosen, run_id=run_id))))
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


def sample(
    size: int = typer.Option(..., "--size", help="Images to draw: their labels judge every selector (500 gives "
                             "intervals of about +-0.05 on a failure rate of 10%)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draw."),
    force: bool = typer.Option(False, "--force", help="Draw again although a sample exists (its labels may go to waste)."),
) -> None:
    """A uniform random sample of the corpus for people to label: the pool `evaluate --selectors` judges every
    selector on (export it with `annotate export --set sample`)."""
    from madmine.steps.context import StepContext
    from madmine.steps.evaluation.sample import SampleParams, run

    table = run(StepContext.of(get_config()), SampleParams(size, seed, force))
    out.print(f"sample: {table.num_rows} images of the corpus (seed {seed}) -> tables/sample", highlight=False)
    out.print("label it (blank masks; an annotator who finds an image out of domain leaves it all 'ignore'): "
              "madmine annotate export --set sample --round R --format coco --out DIR", highlight=False)


def selectors_table(judged) -> Table:
    """The selectors of one round, each measure with its 95% interval."""
    rows = judged.table().to_pylist()
    first = next((r for r in rows if r.get("auroc") is not None), rows[0] if rows else {})
    table = Table(title=f"selectors of round {judged.round} judged on {judged.pool} images with known outcomes "
                        f"({first.get('failures', 0)} failures, {first.get('pool', 0) - first.get('in_domain', 0)} out "
                        "of domain)", caption=f"run {judged.run_id}; 95% bootstrap intervals; failure: per-image mIoU "
                  f"< {first.get('tau')}; precision@|M| and @n4 over the top {first.get('k_m')} and {first.get('k_n4')} "
                  "images of the pool; Spearman with per-image mIoU (negative: failures first)")
    table.add_column("selector")
    for col in ("AUROC", "AUPR-Error", "FPR@95%TPR", "Spearman", "precision@|M|", "precision@n4", "OOD@|M|"):
        table.add_column(col, justify="right")

    def cell(r, key, digits=2):
        v, low, high = r.get(key), r.get(f"{key}_low"), r.get(f"{key}_high")
        if v is None:
            return "-"
        return f"{v:.{digits}f}" + (f" ({low:.{digits}f}..{high:.{digits}f})" if low is not None and high is not None else "")

    for r in rows:
        if r.get("note"):
            table.add_row(r["selector"], f"left out: {r['note']}", "", "", "", "", "", "")
            continue
        table.add_row(r["selector"], cell(r, "auroc"), cell(r, "aupr_error"), cell(r, "fpr95"), cell(r, "spearman"),
                      cell(r, "precision_at_m"), cell(r, "precision_at_n4"), f"{r['ood_at_m']:.2f}")
    return table
