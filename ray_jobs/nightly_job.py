"""Entry point for `ray job submit`: `madmine nightly` on the cluster the job runs on.

    ray job submit --working-dir . -- python ray_jobs/nightly_job.py --config madmine.toml [ARGS...]

Every argument but --config goes to `madmine nightly` unchanged (see its --help). The job's
driver finds the cluster through RAY_ADDRESS, which Ray sets for every job.
"""

import sys

from madmine.cli.ray_job import run

if __name__ == "__main__":
    run("nightly", sys.argv[1:])
