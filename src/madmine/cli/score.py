"""`madmine score`: every model on every image of the manifest (Ray)."""

from __future__ import annotations

import typer
from rich.console import Console

from madmine.cli import state as cli_state

console = Console(stderr=True)


def score(
    resume: bool = typer.Option(False, "--resume", help="Continue the newest unfinished run (committed shards are skipped)."),
    run_id: str = typer.Option(None, "--run-id", help="Name the run (default: derived from the model versions)."),
    executor: str = typer.Option(
        "auto", help="'auto': Ray Data when a cluster address is given (--ray-address, RAY_ADDRESS) or [scoring] actors > 1, "
        "else in this process; 'ray' (Ray Data, an embedded local Ray without an address) or 'local' (in this process)."
    ),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)."),
    max_error_fraction: float = typer.Option(
        None, "--max-error-fraction", help="Fail (after saving everything) when more images than this fraction fail."
    ),
    selection: str = typer.Option(
        "mad", "--selection", help="Whose newest fine-tuned target to score: mad, or a baseline's chain (entropy, msp, "
        "random), for that baseline's next round."
    ),
) -> None:
    """Score the manifest with the target and every competitor -> predictions, pairs, errors."""
    from madmine.steps.context import StepContext
    from madmine.steps.score.run import ScoreParams, run

    params = ScoreParams(run_id=run_id, resume=resume, executor=executor, max_error_fraction=max_error_fraction,
                         selection=selection)
    result = run(StepContext.of(cli_state.get_config(), ray_address=ray_address, show_progress=console.is_terminal), params)
    if result.shards_scored == 0:
        console.print(f"score: run [bold]{result.run_id}[/] is complete ({result.shards_total} shards); nothing to do")
        return
    console.print(
        f"score: run [bold]{result.run_id}[/]: {result.images_scored} images in {result.shards_scored} shards "
        f"({result.shards_skipped} already committed), {result.errors} errors, "
        f"{result.seconds:.1f} s ({result.images_scored / max(result.seconds, 1e-9):.2f} images/s)"
        + (f", {result.retries} object-store requests retried" if result.retries else "")
    )


def register(app: typer.Typer) -> None:
    app.command("score")(score)
