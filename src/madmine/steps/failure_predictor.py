"""A small predictor of failure from what scoring stored: L2-regularised logistic regression.

After a round's ratings, every rated image is a labelled example (failure: MOS at most
[selection] failure_mos) described by features scoring already wrote (sql/features.sql).
A few hundred examples and a dozen features: a linear model on standardised features is
what the data can support, fits in milliseconds, and its weights can be read. Missing
values (a maps model gives no entropy) take the training mean; a constant feature gets
weight 0. Pure: arrays in, arrays out; the workspace side is madmine.steps.learned.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize

L2 = 1.0  # penalty on the standardised weights (sklearn's C = 1)


@dataclass(frozen=True)
class Predictor:
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float

    def standardise(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"expected an (n, {len(self.features)}) array of {', '.join(self.features)}, got {x.shape}")
        mean = np.asarray(self.mean)
        x = np.where(np.isnan(x), mean, x)
        return (x - mean) / np.asarray(self.scale)

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(failure) for each row of x (columns in `features` order)."""
        z = self.standardise(x) @ np.asarray(self.weights) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Predictor:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def fit(x: np.ndarray, y: np.ndarray, features: tuple[str, ...], l2: float = L2) -> Predictor:
    """Minimise mean log-loss + l2/(2n) |w|^2 (intercept unpenalised) on standardised x."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(features):
        raise ValueError(f"x must be (n, {len(features)}) and y (n,), got {x.shape} and {y.shape}")
    if not (0 < y.sum() < y.size):
        raise ValueError(f"need failures and non-failures to fit, got {int(y.sum())} of {y.size}")
    mean = np.nanmean(np.where(np.isnan(x).all(axis=0), 0.0, x), axis=0)
    filled = np.where(np.isnan(x), mean, x)
    std = filled.std(axis=0)
    scale = np.where(std > 1e-12, std, 1.0)
    z = (filled - mean) / scale
    n = y.size

    def loss(theta):
        w, b = theta[:-1], theta[-1]
        t = z @ w + b
        # log(1 + e^t) - y t, stably; its gradient is sigmoid(t) - y
        value = np.logaddexp(0.0, t) - y * t
        residual = 1.0 / (1.0 + np.exp(-t)) - y
        grad = np.r_[z.T @ residual / n + l2 * w / n, residual.mean()]
        return value.mean() + 0.5 * l2 * (w @ w) / n, grad

    theta = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000}).x
    weights = np.where(std > 1e-12, theta[:-1], 0.0)
    return Predictor(tuple(features), tuple(mean.tolist()), tuple(scale.tolist()), tuple(weights.tolist()), float(theta[-1]))


def held_out(groups, share: float, seed: int) -> np.ndarray:
    """True for the examples kept out of fitting to measure the predictor, drawn per group (an image and
    its near-duplicates: `near_duplicate_groups`), so that no copy of a held-out image is fitted on.
    Fixed by (seed, group), so adding images never moves one between the parts."""
    draw = [int.from_bytes(hashlib.sha256(f"{seed}:heldout:{g}".encode()).digest()[:8], "little") / 2**64
            for g in groups]
    return np.asarray(draw) < share


def near_duplicate_groups(image_ids, phashes, distance: int) -> list[str]:
    """A group key per image: images whose 64-bit perceptual hashes differ in at most `distance`
    bits share one (the transitive closure, as selection counts near-duplicates once); the key is
    the smallest image_id of the group. An image without a hash is its own group."""
    ids = list(image_ids)
    parent = list(range(len(ids)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    hashed = [(k, int(h)) for k, h in enumerate(phashes) if h is not None]
    for (a, ha), (b, hb) in itertools.combinations(hashed, 2):
        if bin(ha ^ hb).count("1") <= distance:
            parent[root(a)] = root(b)
    smallest: dict[int, str] = {}
    for k, image_id in enumerate(ids):
        r = root(k)
        smallest[r] = min(smallest.get(r, image_id), image_id)
    return [smallest[root(k)] for k in range(len(ids))]
