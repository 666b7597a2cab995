"""Which examples each step of each worker sees, and the learning-rate schedule. Pure functions.

An epoch is one pass over S, the new failures: with mixing "alternate" every step takes one
batch of S and one batch of S(0), S(0) being drawn from an endless stream of reshuffled
passes, so that S(0) does not dilute S however large it is and is never forgotten. With
"union" an epoch is one pass over S and S(0) shuffled together.

Everything is a function of (seed, epoch, rank, world size): a worker restored from a
checkpoint of epoch k replays epoch k+1 exactly as an uninterrupted run would have, and
every worker takes the same number of steps (DistributedDataParallel needs that).
"""

from __future__ import annotations

import math

import numpy as np


def _permutation(n: int, *key: int) -> np.ndarray:
    return np.random.default_rng([abs(int(k)) for k in key]).permutation(n)


def shard(n: int, epoch: int, rank: int, world: int, seed: int) -> np.ndarray:
    """This worker's share of one shuffled pass over n items, padded by wrap-around to equal length."""
    order = _permutation(n, seed, epoch)
    per_rank = math.ceil(n / world)
    padded = np.resize(order, per_rank * world)
    return padded[rank::world]


def steps_per_epoch(n_primary: int, batch_size: int, world: int) -> int:
    return math.ceil(math.ceil(n_primary / world) / batch_size)


def _stream(n: int, start: int, count: int, seed: int) -> np.ndarray:
    """Items start..start+count of the endless sequence of reshuffled passes over n items."""
    out = np.empty(count, dtype=np.int64)
    for i in range(count):
        k = start + i
        out[i] = _permutation(n, seed, 1_000_003, k // n)[k % n]
    return out


def epoch_batches(
    n_s: int, n_0: int, batch_size: int, epoch: int, rank: int, world: int, seed: int, mixing: str
) -> list[list[int]]:
    """Steps of one epoch for one worker: lists of indices into S followed by S(0) (S(0) item j is n_s + j)."""
    if mixing == "union":
        mine = shard(n_s + n_0, epoch, rank, world, seed)
        return [mine[i : i + batch_size].tolist() for i in range(0, len(mine), batch_size)]
    if mixing != "alternate":
        raise ValueError(f"unknown mixing {mixing!r}")
    mine = shard(n_s, epoch, rank, world, seed)
    steps = steps_per_epoch(n_s, batch_size, world)
    batches = []
    for step in range(steps):
        s_part = mine[step * batch_size : (step + 1) * batch_size].tolist()
        batches.append(s_part)
    if n_0 == 0:
        return batches
    start = ((epoch - 1) * steps * world + rank) * batch_size
    for step in range(steps):
        position = start + step * world * batch_size
        batches[step] = batches[step] + (n_s + _stream(n_0, position, batch_size, seed)).tolist()
    return batches


def poly_lr(base: float, iteration: int, total: int, power: float) -> float:
    """The poly schedule of DeepLab: base * (1 - iteration / total) ** power."""
    return base * max(0.0, 1.0 - iteration / max(total, 1)) ** power
