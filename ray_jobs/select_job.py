"""Entry point for `ray job submit`: `madmine select` on the cluster the job runs on.

    ray job submit --working-dir . -- python ray_jobs/select_job.py --config madmine.toml [ARGS...]

Every argument but --config goes to `madmine select` unchanged (see its --help). The job's
driver finds the cluster through RAY_ADDRESS, which Ray sets for every job.
"""

import sys

from madmine.cli.ray_job import run

if __name__ == "__main__":
    run("select", sys.argv[1:])
