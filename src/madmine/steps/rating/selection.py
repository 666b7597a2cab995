"""S(i+1): the n4 candidates of lowest mean opinion score (step 4 of the method, docs/paper.md), and a
baseline's S: the n4 candidates its own ranking puts first.

One out-of-domain vote drops an image (out of domain is +infinity on the ACR scale); an image
needs `min_raters` raters to count, by default every registered rater (the paper: three raters
rate every image). Ties are broken by image_id so S is reproducible. Each strategy's S is its
own file: tables/selected/round-<R>-<strategy>.parquet (tables.SELECTED).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from madmine import tables
from madmine.errors import MadmineError
from madmine.workspace import Workspace

BY = ("mos", "rank")


@dataclass(frozen=True)
class Selection:
    table: pa.Table
    eligible: int
    out_of_domain: list[str]
    short: list[str]  # in domain so far, rated by fewer than min_raters
    unrated: list[str]  # no vote at all

    @property
    def lacking(self) -> list[str]:
        """Images that may still be in domain and lack ratings: S could change when they get them."""
        return sorted(self.short + self.unrated)


def required_raters(config, ws: Workspace) -> int:
    """[rating] min_raters when set; else every registered rater (at least one)."""
    if config.rating.min_raters is not None:
        return config.rating.min_raters
    from madmine.steps.rating.tokens import list_raters

    return max(1, len(list_raters(ws)))


def mos_by_image(latest: dict[tuple[str, str], dict]) -> dict[str, tuple[list[int], int]]:
    """image_id -> (scores on 1..5, out-of-domain votes)."""
    out: dict[str, tuple[list[int], int]] = {}
    for (image_id, _), event in latest.items():
        scores, ood = out.get(image_id, ([], 0))
        if event["score"] is None:
            ood += 1
        else:
            scores = scores + [event["score"]]
        out[image_id] = (scores, ood)
    return out


def _table(round_: int, rows: list[tuple[str, float | None, int]], uris: dict[str, str], strategy: str) -> pa.Table:
    return pa.table(
        {
            "round": [round_] * len(rows),
            "image_id": [i for i, _, _ in rows],
            "uri": [uris[i] for i, _, _ in rows],
            "mos": [m for _, m, _ in rows],
            "n_ratings": [n for _, _, n in rows],
            "rank": list(range(1, len(rows) + 1)),
            "strategy": [strategy] * len(rows),
        },
        schema=tables.SELECTED.schema,
    )


def select(latest: dict[tuple[str, str], dict], round_: int, uris: dict[str, str], n4: int, min_raters: int,
           strategy: str = tables.MAD) -> Selection:
    """S by mean opinion score over the images of `uris` (the strategy's candidates M)."""
    votes = mos_by_image(latest)
    ood = sorted(i for i, (_, o) in votes.items() if o > 0)
    short = sorted(i for i, (s, o) in votes.items() if o == 0 and len(s) < min_raters and i in uris)
    unrated = sorted(set(uris) - set(votes))
    ranked = sorted(
        ((sum(s) / len(s), i, len(s)) for i, (s, o) in votes.items() if o == 0 and len(s) >= min_raters and i in uris),
        key=lambda t: (t[0], t[1]),
    )
    chosen = [(i, m, n) for m, i, n in ranked[:n4]]
    return Selection(_table(round_, chosen, uris, strategy), len(ranked), ood, short, unrated)


SCORED = ("learned", "hybrid")  # strategies whose candidates' score is a predicted probability of failure


def by_rank(candidates: list[dict], round_: int, n4: int, strategy: str) -> Selection:
    """A baseline's S: its n4 best candidates, no ratings needed, as the paper's baselines pick their
    images by their own score alone: by rank (then image_id), or for the learned strategies by the
    predicted probability of failure (then image_id; hybrid's ranks are within MAD's groups, and the
    groups' tops are not the most likely failures)."""
    best: dict[str, tuple] = {}
    uris: dict[str, str] = {}
    for r in candidates:
        if strategy in SCORED:
            key = (-(r.get("score") if r.get("score") is not None else -1.0), r["image_id"])
        else:
            key = (int(r["rank"]) if r.get("rank") is not None else 1 << 30, r["image_id"])
        if r["image_id"] not in best or key < best[r["image_id"]]:
            best[r["image_id"]] = key
            uris[r["image_id"]] = r.get("uri")
    ranked = sorted(best.values())
    chosen = [(key[-1], None, 0) for key in ranked[:n4]]
    return Selection(_table(round_, chosen, uris, strategy), len(ranked), [], [], [])


def check_complete(chosen: Selection, min_raters: int, allow_partial: bool) -> None:
    """Refuse an S chosen while images that may be in domain still lack ratings (unless asked)."""
    lacking = chosen.lacking
    if lacking and not allow_partial:
        raise MadmineError(
            f"{len(lacking)} candidate image(s) lack ratings ({len(chosen.unrated)} unrated, {len(chosen.short)} with "
            f"fewer than {min_raters} rater(s); e.g. {', '.join(lacking[:3])}): S could still change. Let every rater "
            "rate every image (`madmine rate status`), or pass --allow-partial to choose S from the images rated so far"
        )


def write(ws: Workspace, round_: int, selection: Selection, strategy: str = tables.MAD) -> str:
    return tables.SELECTED.write(ws, selection.table, round=round_, strategy=strategy)
