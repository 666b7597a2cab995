"""`madmine round --round R`: a round's steps from the first unfinished one."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from madmine.cli import state as cli_state

console = Console(stderr=True)


def round_cmd(
    round_: int = typer.Option(..., "--round", "-r", help="The round (0 = the first)."),
    until: str = typer.Option(None, help="Stop after this stage (score, select, rate, S, annotate, finetune, ...)."),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)."),
    export_format: str = typer.Option("coco", help="Annotation format for the exports at the labelling stages."),
    final: bool = typer.Option(
        None, "--final/--not-final", help="A final round: select, rate and draw the next test set T(R+1), label it and "
        "evaluate every model on it, without choosing S or fine-tuning again (default: as the round was started)."
    ),
) -> None:
    """Run a round's stages from the first unfinished one; stop where people must act, and say what to run next."""
    from madmine.pipeline.round import FINAL_STAGES, STAGES, Round

    rnd = Round(
        cli_state.get_config(),
        round_,
        ray_address=ray_address,
        show_progress=sys.stderr.isatty(),
        config_path=str(cli_state.config_path()),
        export_format=export_format,
        final=final,
    )
    status = rnd.run(until=until, on_stage=lambda stage, text: console.print(f"[bold]{stage:>11}[/] {text}"))
    if status.waiting:
        w = status.waiting
        console.print(f"\n[yellow]waiting at '{w.stage}'[/] for {w.who}: {w.what}\nto continue:")
        for command in w.commands:
            console.print(f"  {command}", highlight=False)
    elif status.complete:
        stages = FINAL_STAGES if rnd.final else STAGES
        console.print(f"round {round_}{' (final)' if rnd.final else ''}: all {len(stages)} stages done")


def register(app: typer.Typer) -> None:
    app.command("round")(round_cmd)
