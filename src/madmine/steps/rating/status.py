"""`madmine rate status` as data: progress per rater, agreement, images short of raters, and
the cost ledger. The CLI prints it; `--json` hands it to scripts unchanged.
"""

from __future__ import annotations

from dataclasses import asdict

from madmine import tables
from madmine.config import Config
from madmine.steps.rating import agreement, store, tokens
from madmine.steps.rating.ledger import ledger
from madmine.steps.rating.roundset import RoundSet
from madmine.steps.rating.selection import required_raters
from madmine.workspace import Workspace


def masks_drawn(ws: Workspace, round_: int) -> int:
    """Distinct images given a pixel label for this round (the `labels` table)."""
    table = tables.LABELS.read(ws)
    if table is None:
        return 0
    rows = table.select(["image_id", "round"]).to_pylist()
    return len({r["image_id"] for r in rows if r["round"] is not None and int(r["round"]) == round_})


def report(ws: Workspace, cfg: Config, rs: RoundSet, *, measure: bool = True,
           seconds_per_rating: float | None = None, seconds_per_mask: float | None = None) -> dict:
    problems: list[tokens.Problem] = []
    snapshot = store.load_events(ws, rs.round, problems=problems)
    store.materialise(ws, rs.round, snapshot)
    events = [e for e in snapshot if e["image_id"] in rs]
    latest = store.latest(events)
    records, rater_problems = tokens.scan(ws)
    raters = sorted(set(records) | {r for _, r in latest})
    progress = []
    for rater in raters:
        mine = [e for (_, r), e in latest.items() if r == rater]
        progress.append(
            {
                "rater": rater,
                "rated": len(mine),
                "of": len(rs),
                "out_of_domain": sum(e["score"] is None for e in mine),
                "last": max((e["created_at"] for e in mine), default=None),
            }
        )
    names, _, matrix = agreement.score_matrix(latest)
    per_image: dict[str, list[dict]] = {}
    for (image_id, _), event in latest.items():
        per_image.setdefault(image_id, []).append(event)
    minimum = required_raters(cfg, ws)
    short = [
        i for i in rs.image_ids
        if not any(e["score"] is None for e in per_image.get(i, [])) and len(per_image.get(i, [])) < minimum
    ]
    costs = ledger(
        events,
        candidates=len(rs),
        masks=masks_drawn(ws, rs.round) if isinstance(rs.round, int) else 0,
        seconds_per_rating=seconds_per_rating or cfg.rating.seconds_per_rating,
        seconds_per_mask=seconds_per_mask or cfg.rating.seconds_per_mask,
        idle_gap_s=cfg.rating.idle_gap_s,
        measure=measure and seconds_per_rating is None,
    )
    return {
        "round": rs.round,
        "strategy": rs.strategy,
        "candidates": len(rs),
        "min_raters": minimum,
        "progress": progress,
        "pairs": [asdict(p) for p in agreement.pairwise_spearman(names, matrix)],
        "krippendorff_alpha_ordinal": agreement.krippendorff_alpha(matrix),
        "short_of_raters": short,
        "out_of_domain": sorted({i for i, evs in per_image.items() if any(e["score"] is None for e in evs)}),
        "ledger": costs.as_dict(),
        "skipped_files": [{"path": p.path, "reason": p.reason} for p in rater_problems + problems],
    }
