"""`madmine demo`: the whole method on the synthetic world (the madmine_demo package)."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    workdir: Path = typer.Option(Path("demo-work"), help="Where the demo writes its world, config and workspace."),
    images: int = typer.Option(None, help="Wild images in the corpus (default 5,000)."),
    rounds: int = typer.Option(None, help="Rounds of the method (default 2)."),
    quick: bool = typer.Option(False, "--quick", help="The small end-to-end version: a few hundred images, tiny schedules."),
    world: str = typer.Option(None, help="The corpus's mix of kinds: 'web' (mostly typical scenes, the default) or "
                              "'wild' (mostly corner cases; the --quick default)."),
    choose_by: str = typer.Option(None, "--choose-by", help="How fine-tuning picks its learning rate: 'validation' "
                                  "(a held-out part of S, within 1 point of T(0); the default) or 't0' (the paper's)."),
    seeds: int = typer.Option(None, help="Training seeds of every compared fine-tuning (default 1). 3 prints the "
                              "spread between training runs next to Table 2: the long version, about 24 more minutes on 2 cores."),
) -> None:
    """The whole method on the synthetic world on local Ray: every step, simulated people, Tables 1 and 2, failure yield."""
    from madmine_demo.demo import run_demo

    run_demo(workdir, images, rounds=rounds, quick=quick, world=world, choose_by=choose_by, seeds=seeds)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
