"""`madmine finetune --round R`: fine-tune the target on its found failures (thin; see madmine.steps.train)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from madmine.cli.state import user_errors

out = Console()
err = Console(stderr=True)


@user_errors
def finetune(
    round_: int = typer.Option(
        ..., "--round", "-r", help="Learn from the S of every round <= R (tables/selected/round-*-<strategy>.parquet) plus S(0)."
    ),
    selection: str = typer.Option(
        "mad", "--selection", help="Whose S to learn from: mad, or a baseline (entropy, msp, random) whose S "
        "`rate select --strategy NAME` chose. Each keeps its own chain of versions (target@NAME)."
    ),
    restart: bool = typer.Option(False, "--restart", help="Discard this round's checkpoints and trials; start over."),
    parent: str = typer.Option(
        None, "--parent", help="Build on another chain's version, NAME@VERSION or NAME@STRATEGY (e.g. target@mad): "
        "start from its weights and learn its S too, plus this strategy's S of the rounds after it (learned in "
        "round 1 on MAD's round-0 version: --selection learned --parent target@mad)."
    ),
    seed: int = typer.Option(
        None, "--seed", help="A replicate: the same round, data and parent with this training seed, kept beside the "
        "chain as target@<selection>-seed<k> (never the next round's parent): measures one training run's noise."
    ),
    ray_address: str = typer.Option(
        None, "--ray-address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)."
    ),
) -> None:
    """Fine-tune the target on S(..R) + S(0) as a Ray Train job with the [finetune] recipe (printed first); the best
    checkpoint of the lr grid becomes a new target version, with what it fixed and broke.

    Re-running the same round continues from its checkpoints (finished trials are kept).
    """
    from madmine.cli.state import get_config
    from madmine.names import trained_on
    from madmine.steps.context import StepContext
    from madmine.steps.repair import describe
    from madmine.steps.train.plan import trial_name
    from madmine.steps.train.run import FinetuneParams, run

    ctx = StepContext.of(get_config(), ray_address=ray_address, show_progress=True,
                         say=lambda text: out.print(text, highlight=False, soft_wrap=True, markup=False))
    result = run(ctx, FinetuneParams(round_, selection=selection, restart=restart, parent=parent, seed=seed))
    table = Table(title=f"fine-tuning round {result.round} on {trained_on(result.round, selection)}: {result.data}")
    table.add_column("trial")
    table.add_column("mIoU on T(0), kept epoch", justify="right")
    for trial, miou in sorted(result.trials.items(), key=lambda kv: float(kv[0].split("-", 1)[1])):
        mark = " (winner)" if trial == trial_name(result.lr) else ""
        table.add_row(trial + mark, f"{miou:.4f}")
    out.print(table)
    state = "already fine-tuned" if result.already_done else f"done in {result.seconds:.0f} s"
    out.print(
        f"round {result.round} {state}: {result.model}@{result.version} ({result.model}@{selection}) "
        f"(from {result.parent_version}; mIoU on T(0) {result.parent_val_miou:.4f} -> {result.val_miou:.4f}"
        + (f"; chosen by validation: failures on V {result.parent_v_failures:.2f} -> {result.v_failures:.2f}"
           if result.choose_by == "validation" and result.v_failures is not None else "") + ")\n"
        f"weights: {result.weights_uri}",
        highlight=False,
        soft_wrap=True,
    )
    if result.s_failures is not None:
        out.print(f"fit: fails on {100 * result.s_failures:.0f}% of the S it trained on (the parent: "
                  f"{100 * (result.parent_s_failures or 0):.0f}%), kept epoch {result.epoch}", highlight=False)
    for row in result.repair:
        out.print(f"repair on {describe(row)}", highlight=False, soft_wrap=True)
    if result.fit_warning:
        err.print(f"[yellow]did not fit S:[/] {escape(result.fit_warning)}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
