"""Entry point for `ray job submit`: `madmine select` on the cluster the job runs on.

    ray job submit --working-dir . -- python ray_jobs/select.py --config madmine.toml [ARGS...]

Every argument but --config goes to `madmine select` unchanged (see its --help). The job's
driver finds the cluster through RAY_ADDRESS, which Ray sets for every job.
"""

import os
import sys

# This folder holds select.py: keep it off the import path so that it never shadows the
# standard library's `select` (imported by subprocess, hence by typer and Ray).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

from madmine.ray_job import run  # noqa: E402

if __name__ == "__main__":
    run("select", sys.argv[1:])
