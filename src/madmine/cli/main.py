"""`madmine ...`: the typer app, its global options, every command group registered, and the
console entry point that turns a MadmineError into one line and exit code 2."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from madmine import objectstore
from madmine.cli import (
    annotate,
    bounds,
    compete,
    demo,
    evaluate,
    finetune,
    ingest,
    nightly,
    rate,
    report,
    score,
    select,
    sql,
    validate,
)
from madmine.cli import round as round_cli
from madmine.cli import state as cli_state
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


# In the order `madmine --help` lists them: a round's order, then the runs that drive rounds.
for _module in (validate, ingest, score, bounds, select, sql, rate, annotate, finetune, evaluate, compete, report, round_cli, nightly, demo):
    _module.register(app)


def os_message(exc: OSError) -> str:
    """An OSError as one line: what failed, on which path."""
    what = exc.strerror or str(exc) or type(exc).__name__
    where = f": {exc.filename}" if exc.filename else ""
    hint = "; check that the workspace is writable" if isinstance(exc, PermissionError) or exc.errno == 30 else ""
    return f"{what}{where}{hint}".replace("\n", " ")


def main(argv: list[str] | None = None) -> None:
    """Console entry point; `argv` lets thin wrappers (ray_jobs/) pass their own arguments."""
    try:
        app(args=argv)
    except MadmineError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:
        # an object store failing a request's every attempt; a read-only workspace, a full disk,
        # a busy port: what and where, in one line
        line = objectstore.failure_line(exc) or (os_message(exc) if isinstance(exc, OSError) else None)
        if line is None:
            raise
        console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: committed work is kept; re-run the same command to continue")
        sys.exit(130)


if __name__ == "__main__":
    main()
