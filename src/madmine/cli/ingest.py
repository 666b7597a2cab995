"""`madmine ingest SOURCE...`: images into the manifest."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from madmine.cli import state as cli_state
from madmine.errors import MadmineError

console = Console(stderr=True)


@cli_state.user_errors
def ingest(
    sources: list[str] = typer.Argument(
        ..., help="Folders, globs ('imgs/*.jpg'), s3:// prefixes, or text files (.txt/.lst) with one URI per line."
    ),
    workers: int = typer.Option(8, help="Parallel readers (at least 1)."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Read again the files that failed an earlier ingest."),
    max_error_fraction: float = typer.Option(
        None, help="Exit non-zero when more files than this fraction fail; default \\[scoring] max_error_fraction."
    ),
) -> None:
    """Add images to the manifest (image_id = hash of the bytes; duplicates collapse; re-runs add only new images).

    Exits non-zero (2) when a SOURCE is missing or more files fail than the error budget
    allows; what could be read is added all the same.
    """
    from madmine.steps.context import StepContext
    from madmine.steps.ingest import IngestParams, run

    config = cli_state.get_config()
    params = IngestParams.from_config(config, sources, workers=workers, retry_errors=retry_errors,
                                      max_error_fraction=max_error_fraction)
    result = run(StepContext.of(config, show_progress=console.is_terminal), params)
    console.print(
        f"ingest: [bold green]{result.added}[/] new images, {result.duplicates} duplicates, "
        f"{result.already_known} already known, {len(result.errors)} errors"
        + (f", {result.skipped_non_images} non-image files skipped" if result.skipped_non_images else "")
        + (f", {result.failed_before} that failed before skipped (--retry-errors)" if result.failed_before else "")
    )
    for err in result.errors[:10]:
        console.print(f"  [yellow]{escape(err['error'])}[/]: {escape(err['uri'])} ({escape(err['detail'])})", highlight=False)
    if len(result.errors) > 10:
        console.print(f"  ... {len(result.errors) - 10} more in the errors table (run_id = 'ingest')")
    if result.failure:
        raise MadmineError(result.failure)


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
