"""How far raters agree: Spearman's rho per pair of raters and Krippendorff's alpha (ordinal)
over everyone. Out-of-domain votes are not on the 1..5 scale, so they count as missing here;
`rate status` reports them separately.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import krippendorff
import numpy as np
from scipy.stats import spearmanr

MIN_SHARED = 3


@dataclass(frozen=True)
class PairAgreement:
    rater_a: str
    rater_b: str
    shared: int
    spearman: float | None


def score_matrix(latest: dict[tuple[str, str], dict]) -> tuple[list[str], list[str], np.ndarray]:
    """raters x images array of scores, NaN where unrated or out of domain."""
    raters = sorted({r for _, r in latest})
    images = sorted({i for i, _ in latest})
    r_index = {r: k for k, r in enumerate(raters)}
    i_index = {i: k for k, i in enumerate(images)}
    matrix = np.full((len(raters), len(images)), np.nan)
    for (image_id, rater), event in latest.items():
        if event["score"] is not None:
            matrix[r_index[rater], i_index[image_id]] = event["score"]
    return raters, images, matrix


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def pairwise_spearman(raters: list[str], matrix: np.ndarray) -> list[PairAgreement]:
    out = []
    for a, b in itertools.combinations(range(len(raters)), 2):
        both = ~np.isnan(matrix[a]) & ~np.isnan(matrix[b])
        shared = int(both.sum())
        rho = None
        if shared >= MIN_SHARED:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rho = _finite(spearmanr(matrix[a, both], matrix[b, both]).statistic)
        out.append(PairAgreement(raters[a], raters[b], shared, rho))
    return out


def krippendorff_alpha(matrix: np.ndarray) -> float | None:
    """Ordinal alpha on the ACR scale; None without two raters on one image or without variation."""
    if matrix.shape[0] < 2 or not ((~np.isnan(matrix)).sum(axis=0) >= 2).any():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5])
        except ValueError:
            return None
    return _finite(value)
