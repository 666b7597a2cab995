"""Reaching Ray without Ray's own log lines on the user's terminal: connecting, Ray Data and
Tune print INFO and WARNING lines (cluster start, dataset plans and timings, progress-bar
hints, Tune's state files) that are not madmine's progress. --verbose brings them back."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging, sys
if sys.argv[1] == "verbose":
    logging.basicConfig(level=logging.DEBUG)
from madmine.ray_cluster import ensure_ray
ensure_ray()
import madmine.steps.score.executors.ray_data  # noqa: F401  (imports Ray Data)
import madmine.steps.train.tuning  # noqa: F401  (imports Tune)
import ray.data
print("rows", ray.data.range(20).map_batches(lambda b: b).count())
"""


def run(cli_env, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], env=cli_env, capture_output=True, text=True, timeout=300)


def test_ray_data_and_connection_lines_stay_off_the_terminal(cli_env):
    quiet = run(cli_env, "quiet")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "rows 20" in quiet.stdout
    assert " INFO " not in quiet.stderr and " WARNING " not in quiet.stderr, quiet.stderr[-3000:]
    verbose = run(cli_env, "verbose")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert "streaming_executor" in verbose.stderr  # the same lines, when asked for
