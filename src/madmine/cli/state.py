"""The global CLI options (`madmine --config FILE ...`), shared by every command module."""

from __future__ import annotations

import functools
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from madmine import objectstore
from madmine.config import Config, load_config
from madmine.errors import MadmineError

_state: dict = {"config_path": Path("madmine.toml"), "config": None}


def set_config_path(path: Path) -> None:
    _state["config_path"] = Path(path)
    _state["config"] = None


def config_path() -> Path:
    return _state["config_path"]


def get_config() -> Config:
    """The validated config, loaded once per process."""
    if _state["config"] is None:
        _state["config"] = load_config(_state["config_path"])
    return _state["config"]


def user_errors(fn):
    """Print a MadmineError, or an object store that failed a request's every attempt, as one
    line and exit 2, whatever entry point runs the app (the console script catches these too;
    ray_jobs/ and typer's test runner call commands directly)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            line = str(exc) if isinstance(exc, MadmineError) else objectstore.failure_line(exc)
            if line is None:  # not the user's or the store's: a bug, with its traceback
                raise
            Console(stderr=True).print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc

    return wrapper
