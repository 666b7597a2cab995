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
    workers: int = typer.Option(
        None,
        help="Threads that read and decode in each shard worker (default: one, with a process a core "
        "running shards; four a core for s3://).",
    ),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Read again the files that failed an earlier ingest."),
    max_error_fraction: float = typer.Option(
        None, help="Exit non-zero when more files than this fraction fail; default \\[scoring] max_error_fraction."
    ),
    executor: str = typer.Option(
        "auto", help="Where shards run: auto (Ray when there is a cluster or several actors), ray, or local (this machine)."
    ),
    ray_address: str = typer.Option(None, help="Ray cluster address (default: RAY_ADDRESS)."),
    shard_size: int = typer.Option(1024, help="Files per shard: one unit of work, one manifest part."),
) -> None:
    """Add images to the manifest (image_id = hash of the bytes; duplicates collapse; re-runs add only new images).

    Exits non-zero (2) when a SOURCE is missing or more files fail than the error budget
    allows; what could be read is added all the same.
    """
    from madmine.steps.context import StepContext
    from madmine.steps.ingest import IngestParams, run

    config = cli_state.get_config()
    params = IngestParams.from_config(config, sources, workers=workers, retry_errors=retry_errors,
                                      max_error_fraction=max_error_fraction, executor=executor, shard_size=shard_size)
    result = run(StepContext.of(config, ray_address=ray_address, show_progress=console.is_terminal), params)
    console.print(
        f"ingest: [bold green]{result.added}[/] new images, {result.duplicates} duplicates, "
        f"{result.already_known} already known, {result.error_count} errors"
        + (f", {result.skipped_non_images} non-image files skipped" if result.skipped_non_images else "")
        + (f", {result.failed_before} that failed before skipped (--retry-errors)" if result.failed_before else "")
        + (f", {result.retries} object-store requests retried" if result.retries else "")
    )
    seconds = result.seconds
    console.print(f"  {result.listed} URIs listed and planned in {seconds.get('list and plan', 0):.1f} s, {result.shards} shards "
                  f"read in {seconds.get('shards', 0):.1f} s ({result.executor}), promoted in {seconds.get('promote', 0):.1f} s")
    for err in result.errors[:10]:
        console.print(f"  [yellow]{escape(err['error'])}[/]: {escape(err['uri'])} ({escape(err['detail'])})", highlight=False)
    if result.error_count > 10:
        console.print(f"  ... {result.error_count - 10} more in the errors table (run_id = 'ingest')")
    if result.failure:
        raise MadmineError(result.failure)


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
