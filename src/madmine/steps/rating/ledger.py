"""The cost ledger: what the human hours went to, and what MAD saved against drawing masks
for every candidate.

Rating time is measured from the event timestamps: per rater, the gap between consecutive
votes, where a gap longer than `idle_gap_s` is a break, and the first vote after a break
counts as that rater's median vote time (or the configured seconds_per_rating when there is
no measured gap). Mask time uses seconds_per_mask (the paper's 135 s per image by default).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from datetime import datetime


@dataclass(frozen=True)
class Ledger:
    candidates: int
    ratings: int
    rating_hours: float
    seconds_per_rating: float
    measured: bool
    masks: int
    seconds_per_mask: float
    mask_hours: float
    spent_hours: float
    dense_hours: float
    saved_hours: float

    def as_dict(self) -> dict:
        return asdict(self)


def rating_seconds(events: list[dict], idle_gap_s: float, default_s: float) -> tuple[float, bool]:
    """(total seconds spent voting, whether any gap was measured)."""
    by_rater: dict[str, list[datetime]] = {}
    for event in events:
        by_rater.setdefault(event["rater"], []).append(datetime.fromisoformat(event["created_at"]))
    total = 0.0
    measured = False
    for stamps in by_rater.values():
        stamps.sort()
        gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]
        active = [g for g in gaps if g <= idle_gap_s]
        starts = 1 + len(gaps) - len(active)
        typical = statistics.median(active) if active else default_s
        measured = measured or bool(active)
        total += sum(active) + starts * typical
    return total, measured


def ledger(events: list[dict], candidates: int, masks: int, *, seconds_per_rating: float,
           seconds_per_mask: float, idle_gap_s: float, measure: bool = True) -> Ledger:
    """measure=False prices every vote at seconds_per_rating instead of the timestamps."""
    if measure:
        seconds, measured = rating_seconds(events, idle_gap_s, seconds_per_rating)
    else:
        seconds, measured = len(events) * seconds_per_rating, False
    ratings = len(events)
    per_rating = seconds / ratings if ratings else seconds_per_rating
    rating_hours = seconds / 3600
    mask_hours = masks * seconds_per_mask / 3600
    dense_hours = candidates * seconds_per_mask / 3600
    spent = rating_hours + mask_hours
    return Ledger(
        candidates=candidates,
        ratings=ratings,
        rating_hours=rating_hours,
        seconds_per_rating=per_rating,
        measured=measured,
        masks=masks,
        seconds_per_mask=seconds_per_mask,
        mask_hours=mask_hours,
        spent_hours=spent,
        dense_hours=dense_hours,
        saved_hours=dense_hours - spent,
    )
