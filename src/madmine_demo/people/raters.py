"""Simulated raters: people who look at the target's prediction and score it 1..5.

A rater sees the map the rating page shows (the cached prediction of the round's target
version) and judges it by how well it covers the objects: the latent score is a line through
(IoU 0.2, 1) and (IoU 0.95, 5), plus the rater's own leniency and Gaussian noise
(sd 0.6), rounded to the ACR scale. An image with no object of any class is marked out of
domain with probability 0.95 by each rater (one mark drops it). Every draw is seeded by
(seed, rater, image), so the same round gets the same votes.

Votes go through the rating storage the web app writes (madmine.steps.rating.store.record).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from madmine.config import Config
from madmine.steps.evaluation.compete import rating_set
from madmine.steps.rating import store
from madmine.steps.rating.roundset import load_round
from madmine.steps.rating.tokens import add_rater, list_raters
from madmine.workspace import Workspace
from madmine_demo.world.truth import Truth

NOISE_SD = 0.6
OOD_DETECTION = 0.95


@dataclass(frozen=True)
class Rater:
    name: str
    leniency: float  # added to the latent score: > 0 rates kindly


RATERS = (Rater("alice", 0.0), Rater("bob", 0.3), Rater("carol", -0.3))


def _rng(seed: int, rater: str, image_id: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{rater}:{image_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def acr_score(iou: float, rater: Rater, rng: np.random.Generator) -> int:
    latent = 1.0 + 4.0 * (iou - 0.2) / 0.75 + rater.leniency + rng.normal(0.0, NOISE_SD)
    return int(np.clip(np.rint(latent), 1, 5))


def vote(iou: float, out_of_domain: bool, rater: Rater, seed: int, image_id: str) -> int | None:
    """A score 1..5, or None for out of domain."""
    rng = _rng(seed, rater.name, image_id)
    if out_of_domain and rng.random() < OOD_DETECTION:
        return None
    return acr_score(iou if np.isfinite(iou) else 0.0, rater, rng)


def rate_round(ws: Workspace, config: Config, truth: Truth, round_: int, seed: int = 0,
               raters: tuple[Rater, ...] = RATERS) -> dict[str, float]:
    """Every rater votes on every candidate of the round; returns image_id -> true IoU of what they saw."""
    known = set(list_raters(ws))
    for rater in raters:
        if rater.name not in known:
            add_rater(ws, rater.name)
    rs = load_round(ws, config, round_)
    ious = {}
    for image_id in rs.image_ids:
        iou = truth.image_iou(image_id, rs.load_map(rs.target, image_id))
        ood = truth.kind(image_id) == "ood"
        ious[image_id] = iou
        for rater in raters:
            store.record(ws, round_, image_id, rater.name, vote(iou, ood, rater, seed, image_id))
    return ious


def rate_competition(ws: Workspace, config: Config, truth: Truth, competition: str, seed: int = 0,
                     raters: tuple[Rater, ...] = RATERS) -> int:
    """Every rater votes on every image of a MAD competition (`rate serve --competition ID`): A's map is
    what they see, named only 'A'; an out-of-domain vote keeps an image out. Returns the images rated."""
    known = set(list_raters(ws))
    for rater in raters:
        if rater.name not in known:
            add_rater(ws, rater.name)
    rs = rating_set(config, ws, competition)
    for image_id in rs.image_ids:
        iou = truth.image_iou(image_id, rs.load_map(rs.target, image_id))
        ood = truth.kind(image_id) == "ood"
        for rater in raters:
            store.record(ws, rs.round, image_id, rater.name, vote(iou, ood, rater, seed, image_id))
    return len(rs.image_ids)
