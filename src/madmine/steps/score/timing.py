"""Where a scorer's time goes: seconds per phase, summed over a shard and kept in its marker,
so that `bench.score` (and anyone reading the markers) can account for every second."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager


class Timings:
    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - started

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds

    def take(self) -> dict[str, float]:
        """The phases since the last take, rounded to microseconds."""
        out = {k: round(v, 6) for k, v in self.seconds.items()}
        self.seconds.clear()
        return out
