"""Entry point for `ray job submit`: `madmine finetune` on the cluster the job runs on.

    ray job submit --working-dir . -- python ray_jobs/finetune_job.py --config madmine.toml --round R [--restart]

Every argument but --config goes to `madmine finetune` unchanged (see its --help). The
job's driver finds the cluster through RAY_ADDRESS, which Ray sets for every job. A job
stopped or killed mid-way continues from its checkpoints when submitted again.
"""

import sys

from madmine.cli.ray_job import run

if __name__ == "__main__":
    run("finetune", sys.argv[1:])
