"""Entry point for `ray job submit`: `madmine finetune` on the cluster the job runs on.

    ray job submit --working-dir . -- python ray_jobs/finetune.py --config madmine.toml --round R [--restart]

Every argument after --config is passed to `madmine finetune` unchanged (see its --help).
The job's driver finds the cluster through RAY_ADDRESS, which Ray sets for every job. A job
stopped or killed mid-way continues from its checkpoints when submitted again.
"""

import os
import sys

# This folder holds select.py: keep it off the import path so that it never shadows the
# standard library's `select` (imported by subprocess, hence by typer and Ray).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402

from madmine.cli import app, main  # noqa: E402
from madmine.cli_finetune import ensure_registered  # noqa: E402


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(add_help=False)  # --help goes on to madmine
    parser.add_argument("--config", default="madmine.toml", help="madmine config file (TOML)")
    known, rest = parser.parse_known_args(argv)
    ensure_registered(app)
    main(["--config", known.config, "finetune", *rest])


if __name__ == "__main__":
    run(sys.argv[1:])
