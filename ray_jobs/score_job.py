"""Entry point for `ray job submit`: `madmine score` on the cluster the job runs on.

    ray job submit --working-dir . -- python ray_jobs/score_job.py --config madmine.toml [ARGS...]

Every argument but --config goes to `madmine score` unchanged (see its --help). The job's
driver finds the cluster through RAY_ADDRESS, which Ray sets for every job.
"""

import sys

from madmine.cli.ray_job import run

if __name__ == "__main__":
    run("score", sys.argv[1:])
