"""What every `ray_jobs/*.py` entry point does: `--config FILE ARGS...` -> `madmine --config FILE COMMAND ARGS...`."""

from __future__ import annotations

import argparse

from madmine.cli.main import main


def run(command: str, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(add_help=False)  # --help goes on to madmine
    parser.add_argument("--config", default="madmine.toml")
    known, rest = parser.parse_known_args(argv)
    main(["--config", known.config, command, *rest])
