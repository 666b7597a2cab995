"""A real multi-node Ray cluster on this machine, driven from tests: a head (no CPUs, the job
server on 127.0.0.1) and worker nodes, each its own raylet and object store, that a test can
add or kill (ungracefully, as a lost machine) while work runs.

The cluster lives in a child process (`python multinode.py`, a line protocol on stdin and
stdout), so the test process keeps its own connection to the session's cluster. `Cluster`
(below) is the test-side handle; it stops the child, and with it every node, even when a
test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ray.cluster_utils import Cluster as RayCluster


def wait_for(condition, timeout: float, what: str):
    """condition()'s first truthy value, polled until `timeout` seconds have passed."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Test-side handle: `add()` a worker node, `kill(node_id)` one, `stop()` them all."""

    def __init__(self, workers: int = 2, cpus_per_worker: int = 1, env: dict | None = None):
        self.env = dict(env or os.environ)
        self.env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(cpus_per_worker), str(_free_port())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=self.env, start_new_session=True,
        )
        hello = self._read()
        self.address, self.dashboard = hello["address"], hello["dashboard"]
        self.workers: list[str] = []
        for _ in range(workers):
            self.add()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the multi-node cluster process exited ({self.proc.poll()})")
        return json.loads(line)

    def _ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def add(self) -> str:
        node = self._ask("add")["node"]
        self.workers.append(node)
        return node

    def kill(self, node: str) -> None:
        self._ask(f"kill {node}")
        self.workers.remove(node)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self._ask("quit")
                self.proc.wait(timeout=60)
            except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _retry(start, attempts: int = 3):
    """Ray gives a starting node 30 s to register; on a loaded 2-core machine it can miss that."""
    for attempt in range(attempts):
        try:
            return start()
        except Exception:  # Ray raises a bare Exception on a start-up timeout
            if attempt == attempts - 1:
                raise


def _serve(cpus_per_worker: int, dashboard_port: int) -> None:
    """The child: start the head, then obey add / kill NODE / quit, one JSON line per answer."""
    cluster = _retry(lambda: RayCluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dashboard_port,
            "dashboard_agent_listen_port": _free_port(),  # not Ray's fixed 52365: the session's cluster has one too
        },
    ))
    nodes = {}

    def say(obj) -> None:
        print(json.dumps(obj), flush=True)

    say({"address": cluster.address, "dashboard": f"http://127.0.0.1:{dashboard_port}"})
    for line in sys.stdin:
        command = line.split()
        if not command:
            continue
        if command[0] == "add":
            node = _retry(lambda: cluster.add_node(num_cpus=cpus_per_worker, node_ip_address="127.0.0.1"))
            nodes[node.node_id] = node
            cluster.wait_for_nodes()
            say({"node": node.node_id})
        elif command[0] == "kill":
            cluster.remove_node(nodes.pop(command[1]), allow_graceful=False)
            say({"killed": command[1]})
        elif command[0] == "quit":
            cluster.shutdown()
            say({"stopped": True})
            return


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
