"""S(i+1): the n4 candidates of lowest mean opinion score (ARCHITECTURE §1 step 4).

One out-of-domain vote drops an image (out of domain is +infinity on the ACR scale); an image
needs `min_raters` raters to count. Ties are broken by image_id so S is reproducible.
Written to tables/selected/round-<R>.parquet: round, image_id, uri, mos, n_ratings, rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from madmine import tables
from madmine.workspace import Workspace


@dataclass(frozen=True)
class Selection:
    table: pa.Table
    eligible: int
    out_of_domain: list[str]
    short: list[str]
    unrated: list[str]


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


def select(latest: dict[tuple[str, str], dict], round_: int, uris: dict[str, str], n4: int, min_raters: int) -> Selection:
    votes = mos_by_image(latest)
    ood = sorted(i for i, (_, o) in votes.items() if o > 0)
    short = sorted(i for i, (s, o) in votes.items() if o == 0 and len(s) < min_raters)
    unrated = sorted(set(uris) - set(votes))
    ranked = sorted(
        ((sum(s) / len(s), i, len(s)) for i, (s, o) in votes.items() if o == 0 and len(s) >= min_raters and i in uris),
        key=lambda t: (t[0], t[1]),
    )
    chosen = ranked[:n4]
    table = pa.table(
        {
            "round": [round_] * len(chosen),
            "image_id": [i for _, i, _ in chosen],
            "uri": [uris[i] for _, i, _ in chosen],
            "mos": [m for m, _, _ in chosen],
            "n_ratings": [n for _, _, n in chosen],
            "rank": list(range(1, len(chosen) + 1)),
        },
        schema=tables.SELECTED.schema,
    )
    return Selection(table=table, eligible=len(ranked), out_of_domain=ood, short=short, unrated=unrated)


def write(ws: Workspace, round_: int, selection: Selection) -> str:
    path = tables.SELECTED.path(ws, round=round_)
    ws.write_parquet(path, selection.table)
    return path
