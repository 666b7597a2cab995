"""Run code that may hang or eat memory (a FIFO, /dev/zero, a regression of either) in a child
process with a time and address-space limit, so that a failing test fails instead of taking
the machine with it. The child is killed when it runs past its time; nothing outlives the test.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MADMINE = Path(sys.executable).with_name("madmine")
MEMORY_LIMIT = 3 << 30  # address space: madmine's imports need ~1.5 GB of it, /dev/zero would take all


def _limits(memory: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        os.setsid()  # its own process group: a timeout kills the child and anything it started

    return apply


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    src = str(REPO / "src")
    # the caller's PYTHONPATH first (it may name the checkout under test), then this checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), src, str(REPO / "tests" / "support")) if p)
    env.update(COLUMNS="200", NO_COLOR="1", RAY_USAGE_STATS_ENABLED="0", **(extra or {}))
    return env


def _run(cmd: list[str], timeout: float, memory: int, cwd=None, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env=_env(env), preexec_fn=_limits(memory))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(cmd, -9, out, err + f"\n[killed after {timeout} s]")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def python(code: str, *, timeout: float = 60, memory: int = MEMORY_LIMIT, cwd=None) -> subprocess.CompletedProcess:
    """`python -c code` under the limits; rc -9 means it was killed for running too long."""
    return _run([sys.executable, "-c", textwrap.dedent(code)], timeout, memory, cwd)


def madmine(*args: str, timeout: float = 90, memory: int = MEMORY_LIMIT, cwd=None, env=None) -> subprocess.CompletedProcess:
    """The `madmine` console script (this checkout's package) under the limits."""
    return _run([str(MADMINE), *args], timeout, memory, cwd, env)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The `error: ...` lines a failed command printed."""
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The single error line of a command that failed cleanly (exit 2, no traceback)."""
    text = result.stdout + result.stderr
    assert result.returncode == 2, f"exit {result.returncode}:\n{text}"
    assert "Traceback" not in text, text
    lines = error_lines(result)
    assert len(lines) == 1, text
    return lines[0]


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextmanager
def address_space_ceiling(extra: int = 4 << 30):
    """Lower this process's address-space limit to what it uses now plus `extra` for the
    duration: a decoder that tries to allocate gigabytes gets MemoryError instead of taking
    the machine (the soft limit is restored after, as any process may raise it back)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + extra
    for bound in (soft, hard):
        if bound != resource.RLIM_INFINITY:
            limit = min(limit, bound)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
