"""Which examples each step of each worker sees, and how many steps a trial takes. Pure functions.

With mixing "union" (the paper's) an epoch is one pass over S and S(0) shuffled together.
With "alternate" an epoch is one pass over S, the new failures: every batch takes its share
`s_share` from S and the rest from S(0), S(0) being drawn from an endless stream of
reshuffled passes, so that S(0) does not dilute S however large it is and is never forgotten.
A step budget ([finetune] steps) cuts the last epoch short.

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


def split_batch(batch_size: int, s_share: float, n_0: int) -> tuple[int, int]:
    """(images of S, images of S(0)) in one alternate batch: at least one of S; none of S(0) without S(0)."""
    if n_0 == 0:
        return batch_size, 0
    from_s = min(batch_size, max(1, round(batch_size * s_share)))
    return from_s, batch_size - from_s


def epoch_steps(n_s: int, n_0: int, batch_size: int, world: int, mixing: str, s_share: float = 0.5) -> int:
    """Steps in one epoch: a pass over S and S(0) together (union), or over S (alternate)."""
    if mixing == "union":
        return steps_per_epoch(n_s + n_0, batch_size, world)
    return steps_per_epoch(n_s, split_batch(batch_size, s_share, n_0)[0], world)


def _stream(n: int, start: int, count: int, seed: int) -> np.ndarray:
    """Items start..start+count of the endless sequence of reshuffled passes over n items."""
    out = np.empty(count, dtype=np.int64)
    for i in range(count):
        k = start + i
        out[i] = _permutation(n, seed, 1_000_003, k // n)[k % n]
    return out


def epoch_batches(
    n_s: int, n_0: int, batch_size: int, epoch: int, rank: int, world: int, seed: int, mixing: str,
    s_share: float = 0.5,
) -> list[list[int]]:
    """Steps of one epoch for one worker: lists of indices into S followed by S(0) (S(0) item j is n_s + j)."""
    if mixing == "union":
        mine = shard(n_s + n_0, epoch, rank, world, seed)
        return [mine[i : i + batch_size].tolist() for i in range(0, len(mine), batch_size)]
    if mixing != "alternate":
        raise ValueError(f"unknown mixing {mixing!r}")
    from_s, from_0 = split_batch(batch_size, s_share, n_0)
    mine = shard(n_s, epoch, rank, world, seed)
    steps = steps_per_epoch(n_s, from_s, world)
    batches = [mine[step * from_s : (step + 1) * from_s].tolist() for step in range(steps)]
    if from_0 == 0:
        return batches
    start = ((epoch - 1) * steps * world + rank) * from_0
    for step in range(steps):
        position = start + step * world * from_0
        batches[step] = batches[step] + (n_s + _stream(n_0, position, from_0, seed)).tolist()
    return batches
