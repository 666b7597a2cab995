"""Choosing S, the rating step's entry point: `run(ctx, ChooseParams(round))`.

MAD's S is the n4 candidates of lowest mean opinion score among the images rated by enough
raters (madmine.steps.rating.selection); a baseline's S is its own top n4, no ratings needed.
Neither takes an image of the round's test set T(R+1), drawn before S so that it is a uniform
sample of M's in-domain images (madmine.steps.evaluation.testset).
`madmine rate select`, a round's S step and the demo all choose through `run`; a round's rate
step asks `tally` whether any candidate still lacks ratings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from madmine import tables
from madmine.errors import MadmineError
from madmine.steps import reads
from madmine.steps.context import StepContext
from madmine.steps.rating import selection, store
from madmine.steps.rating.roundset import RoundSet, load_round


@dataclass(frozen=True)
class ChooseParams:
    round: int
    strategy: str = tables.MAD
    n4: int = 100  # [selection] n4
    min_raters: int | None = None  # default: [rating] min_raters, else every registered rater
    by: str | None = None  # mos (MAD's S) or rank (a baseline's own top n4); default: mos for mad, rank otherwise
    allow_partial: bool = False  # choose although images that may be in domain still lack ratings

    @classmethod
    def from_config(cls, config, round_: int, **overrides) -> ChooseParams:
        n4 = overrides.pop("n4", None)
        return cls(round_, n4=config.selection.n4 if n4 is None else n4,
                   **{k: v for k, v in overrides.items() if v is not None})

    @property
    def how(self) -> str:
        return self.by or ("mos" if self.strategy == tables.MAD else "rank")


@dataclass
class Tally:
    """The round's candidates and S as the votes stand now."""

    candidates: RoundSet
    chosen: selection.Selection
    min_raters: int
    votes: int = 0
    skipped: list = field(default_factory=list)  # unreadable files of the rating storage
    held_for_test: int = 0  # candidates kept out of S: the round's test set T(R+1)


@dataclass
class ChooseResult:
    tally: Tally
    path: str
    how: str  # in words: how S was chosen

    @property
    def chosen(self) -> selection.Selection:
        return self.tally.chosen


def _check(params: ChooseParams, min_raters: int) -> None:
    if params.n4 < 1 or min_raters < 1:
        raise MadmineError("--n4 and --min-raters must be >= 1")
    if params.how not in selection.BY:
        raise MadmineError(f"--by must be one of {', '.join(selection.BY)}, got {params.how!r}")


def tally(ctx: StepContext, params: ChooseParams, materialise: bool = False) -> Tally:
    """S as the votes stand: one read of the round's events (and, with `materialise`, the ratings
    table written from that same read)."""
    rs = load_round(ctx.ws, ctx.config, params.round, params.strategy)
    min_raters = selection.required_raters(ctx.config, ctx.ws) if params.min_raters is None else params.min_raters
    _check(params, min_raters)
    held = test_ids(ctx.ws, rs.round)
    if params.how == "rank":
        rows = [r for r in reads.candidates(ctx.ws, rs.round, params.strategy).to_pylist() if r["image_id"] not in held]
        return Tally(rs, selection.by_rank(rows, rs.round, params.n4, params.strategy), min_raters,
                     held_for_test=len(held & set(rs.uris)))
    problems: list = []
    snapshot = store.load_events(ctx.ws, rs.round, problems=problems)
    if materialise:
        store.materialise(ctx.ws, rs.round, snapshot)
    latest = store.latest([e for e in snapshot if e["image_id"] in rs and e["image_id"] not in held])
    uris = {i: u for i, u in rs.uris.items() if i not in held}
    chosen = selection.select(latest, rs.round, uris, params.n4, min_raters, params.strategy)
    return Tally(rs, chosen, min_raters, len(latest), problems, len(held & set(rs.uris)))


def test_ids(ws, round_: int) -> set[str]:
    """The images of the round's test set T(R+1), if it was drawn."""
    return {r["image_id"] for r in reads.testsets(ws).get(round_, [])}


def run(ctx: StepContext, params: ChooseParams, counted: Tally | None = None) -> ChooseResult:
    """The S step: choose S(R+1) for the strategy and write tables/selected (refused while candidates
    that may be in domain lack ratings, unless `allow_partial`). `counted`: a tally the caller already
    made (and showed) with materialise=True, so that S comes from the votes it showed."""
    counted = counted or tally(ctx, params, materialise=True)
    chosen = counted.chosen
    if params.how == "rank":
        how = f"the {params.n4} best-ranked of {chosen.eligible} {params.strategy} candidates (no ratings)"
    else:
        selection.check_complete(chosen, counted.min_raters, params.allow_partial)
        how = f"lowest MOS among {chosen.eligible} eligible images"
    path = selection.write(ctx.ws, counted.candidates.round, chosen, params.strategy)
    return ChooseResult(counted, ctx.ws.url(path), how)
