"""`madmine ...`: a thin command line over the package (typer + rich)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from madmine import cli_state
from madmine.errors import MadmineError

console = Console(stderr=True)
app = typer.Typer(
    help=(
        "madmine finds the images a segmentation model fails on, by maximum discrepancy "
        "against competitor models, and fixes the model with them.\n\n"
        "Typical round: ingest -> score -> bounds -> select -> rate -> annotate -> finetune."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global(
    config: Path = typer.Option(
        Path("madmine.toml"), "--config", "-c", help="Config file (TOML): workspace, classes, models.", show_default=True
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs."),
) -> None:
    cli_state.set_config_path(config)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
        force=True,
    )


@app.command()
def validate() -> None:
    """Check the config and build every model once (weights, class counts), then print the models."""
    from madmine.models import check_models

    config = cli_state.get_config()
    versions = check_models(config)
    table = Table(title=f"{cli_state.config_path()}: OK")
    for col in ("model", "role", "source", "input", "version"):
        table.add_column(col)
    for m in config.models:
        source = m.arch or m.factory or m.maps
        table.add_row(m.name, m.role, source, str(m.input_size) if m.is_network else "own size", versions[m.name])
    Console().print(table)


@app.command()
def ingest(
    sources: list[str] = typer.Argument(
        ..., help="Folders, globs ('imgs/*.jpg'), s3:// prefixes, or text files (.txt/.lst) with one URI per line."
    ),
    workers: int = typer.Option(8, help="Parallel readers."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Read again the files that failed an earlier ingest."),
) -> None:
    """Add images to the manifest (image_id = hash of the bytes; duplicates collapse; re-runs add only new images)."""
    from madmine.corpus import ingest as run_ingest
    from madmine.workspace import Workspace

    config = cli_state.get_config()
    result = run_ingest(
        Workspace.from_config(config),
        sources,
        storage_options=config.storage_options,
        max_pixels=config.scoring.max_pixels,
        min_side=config.scoring.min_side,
        workers=workers,
        retry_errors=retry_errors,
    )
    console.print(
        f"ingest: [bold green]{result.added}[/] new images, {result.duplicates} duplicates, "
        f"{result.already_known} already known, {len(result.errors)} errors"
        + (f", {result.skipped_non_images} non-image files skipped" if result.skipped_non_images else "")
        + (f", {result.failed_before} that failed before skipped (--retry-errors)" if result.failed_before else "")
    )
    for err in result.errors[:10]:
        console.print(f"  [yellow]{err['error']}[/]: {err['uri']} ({err['detail']})")
    if len(result.errors) > 10:
        console.print(f"  ... {len(result.errors) - 10} more in the errors table (run_id = 'ingest')")


@app.command()
def score(
    resume: bool = typer.Option(False, "--resume", help="Continue the newest unfinished run (committed shards are skipped)."),
    run_id: str = typer.Option(None, "--run-id", help="Name the run (default: derived from the model versions)."),
    executor: str = typer.Option("ray", help="'ray' (Ray Data, local or cluster) or 'local' (in-process)."),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)."),
    max_error_fraction: float = typer.Option(
        None, "--max-error-fraction", help="Fail (after saving everything) when more images than this fraction fail."
    ),
) -> None:
    """Score the manifest with the target and every competitor -> predictions, pairs, errors."""
    from madmine.score import score as run_score
    from madmine.train.versions import with_latest_target

    config = with_latest_target(cli_state.get_config())  # the newest fine-tuned target, if any
    result = run_score(
        config,
        run_id=run_id,
        resume=resume,
        executor=executor,
        ray_address=ray_address,
        max_error_fraction=max_error_fraction,
    )
    if result.shards_scored == 0:
        console.print(f"score: run [bold]{result.run_id}[/] is complete ({result.shards_total} shards); nothing to do")
        return
    console.print(
        f"score: run [bold]{result.run_id}[/]: {result.images_scored} images in {result.shards_scored} shards "
        f"({result.shards_skipped} already committed), {result.errors} errors, "
        f"{result.seconds:.1f} s ({result.images_scored / max(result.seconds, 1e-9):.2f} images/s)"
    )


@app.command("round")
def round_cmd(
    round_: int = typer.Option(..., "--round", "-r", help="The round (0 = the first)."),
    until: str = typer.Option(None, help="Stop after this stage (score, select, rate, S, annotate, finetune, ...)."),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)."),
    export_format: str = typer.Option("coco", help="Annotation format for the exports at the labelling stages."),
) -> None:
    """Run a round's stages from the first unfinished one; stop where people must act, and say what to run next."""
    from madmine.round import STAGES, Round

    rnd = Round(
        cli_state.get_config(),
        round_,
        ray_address=ray_address,
        show_progress=sys.stderr.isatty(),
        config_path=str(cli_state.config_path()),
        export_format=export_format,
    )
    status = rnd.run(until=until, on_stage=lambda stage, text: console.print(f"[bold]{stage:>11}[/] {text}"))
    if status.waiting:
        w = status.waiting
        console.print(f"\n[yellow]waiting at '{w.stage}'[/] for {w.who}: {w.what}\nto continue:")
        for command in w.commands:
            console.print(f"  {command}", highlight=False)
    elif status.complete:
        console.print(f"round {round_}: all {len(STAGES)} stages done")


@app.command()
def nightly(
    sources: list[str] = typer.Argument(None, help="What to ingest (default: [nightly] sources)."),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)."),
) -> None:
    """Unattended run under a workspace lock: ingest what is new, score only new images, refresh the selection."""
    from madmine.lock import LockHeld
    from madmine.nightly import nightly as run_nightly

    try:
        summary = run_nightly(cli_state.get_config(), sources, ray_address=ray_address, show_progress=sys.stderr.isatty())
    except LockHeld as exc:  # not a failure: the other run does the work
        console.print(f"nightly: {exc}")
        return
    for line in summary.lines():
        console.print(line)


@app.command()
def demo(
    workdir: Path = typer.Option(Path("demo-work"), help="Where the demo writes its world, config and workspace."),
    images: int = typer.Option(None, help="Wild images in the corpus (default 5,000)."),
    rounds: int = typer.Option(None, help="Rounds of the method (default 2)."),
    quick: bool = typer.Option(False, "--quick", help="The small end-to-end version: one round, a few hundred images."),
) -> None:
    """The whole method on the synthetic world on local Ray: every stage, simulated people, Tables 1 and 2, failure yield."""
    from madmine.demo import run_demo

    run_demo(workdir, images, rounds=rounds, quick=quick)


def _register_command_modules() -> None:
    from madmine.cli_evaluate import register as register_evaluate
    from madmine.cli_finetune import register as register_finetune
    from madmine.cli_rating import register as register_rating
    from madmine.cli_select import register as register_select

    register_select(app)
    register_rating(app)
    register_finetune(app)
    register_evaluate(app)


_register_command_modules()


def main(argv: list[str] | None = None) -> None:
    """Console entry point; `argv` lets thin wrappers (ray_jobs/) pass their own arguments."""
    try:
        app(args=argv)
    except MadmineError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: committed work is kept; re-run the same command to continue")
        sys.exit(130)


if __name__ == "__main__":
    main()
