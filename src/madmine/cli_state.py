"""The global CLI options (`madmine --config FILE ...`), shared by every command module."""

from __future__ import annotations

from pathlib import Path

from madmine.config import Config, load_config

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
