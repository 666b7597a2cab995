"""`madmine round --round R`: a round's steps from the first unfinished one."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from madmine.cli import state as cli_state

console = Console(stderr=True)


def round_cmd(
    round_: int = typer.Option(..., "--round", "-r", help="The round (0 = the first)."),
    until: str = typer.Option(None, help="Stop after this step (score, select, rate, S, annotate, finetune, ...)."),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)."),
    export_format: str = typer.Option("coco", help="Annotation format for the exports at the labelling steps."),
    final: bool = typer.Option(
        None, "--final/--not-final", help="A final round: select, rate and draw the next test set T(R+1), label it and "
        "evaluate every model on it, without choosing S or fine-tuning again (default: as the round was started)."
    ),
) -> None:
    """Run a round's steps from the first unfinished one; stop where people must act, and say what to run next."""
    from madmine.pipeline.round import Round

    rnd = Round(
        cli_state.get_config(),
        round_,
        ray_address=ray_address,
        show_progress=sys.stderr.isatty(),
        config_path=str(cli_state.config_path()),
        export_format=export_format,
        final=final,
        say=lambda text: console.print(f"{'':>11} {text}", highlight=False, soft_wrap=True, markup=False),
    )
    waiting = rnd.run(until=until, on_step=lambda step, text: console.print(f"[bold]{step:>11}[/] {text}"))
    if waiting:
        console.print(f"\n[yellow]waiting at '{waiting.step}'[/] for {waiting.who}: {waiting.what}\nto continue:")
        for command in waiting.commands:
            console.print(f"  {command}", highlight=False)
    elif rnd.complete:
        console.print(f"round {round_}{' (final)' if rnd.final else ''}: all {len(rnd.executor.steps)} steps done")


def register(app: typer.Typer) -> None:
    app.command("round")(round_cmd)
