"""`madmine ingest SOURCE...`: images into the manifest."""

from __future__ import annotations

import typer
from rich.console import Console

from madmine.cli import state as cli_state

console = Console(stderr=True)


def ingest(
    sources: list[str] = typer.Argument(
        ..., help="Folders, globs ('imgs/*.jpg'), s3:// prefixes, or text files (.txt/.lst) with one URI per line."
    ),
    workers: int = typer.Option(8, help="Parallel readers."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Read again the files that failed an earlier ingest."),
) -> None:
    """Add images to the manifest (image_id = hash of the bytes; duplicates collapse; re-runs add only new images)."""
    from madmine.steps.ingest import ingest as run_ingest
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


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
