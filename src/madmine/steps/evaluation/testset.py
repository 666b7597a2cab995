"""T(R+1): the unbiased test set drawn in round R (step 6 of the method, docs/paper.md).

Names follow the paper: T(0) is the held-out set of the training domain, and the set drawn
from M of round R (the code's round numbers start at 0, the paper's i too) is T(R+1), next to
S(R+1), the images round R fine-tunes on. The table keeps the round (`round` = R) and the
name (`testset` = "T(R+1)").

Drawn from M(R), the images MAD kept in round R, so that T(R+1) holds the kind of image the
round was about, before S(R+1) is chosen: S is the n4 images of lowest mean opinion score, so a
test set drawn from what S leaves would hold the images the target does well on. Drawn
first, T(R+1) is a uniform sample of M(R)'s in-domain images, and S(R+1) is chosen from
M(R) without T(R+1) (madmine.steps.rating.choose), its budget whole. The rules:
- out of domain removed: an image any rater marked out of domain never enters; an image
  needs [rating] min_raters votes on the 1..5 scale (default: every registered rater), since
  an unrated one cannot be known to be in domain;
- never an image of an earlier round's S(j), of any strategy (those are training images), nor
  of another round's test set;
- at most `per_class` images per main foreground class, the main class of an image being
  the class_id of its candidate row with the largest class_fraction (ties: smaller id);
- `size` images (30) in a seeded order that depends only on the seed, the round and each
  image_id: sha256("<seed>:<round>:<image_id>"), so the draw is reproducible and does
  not follow the file's row order, MOS or d.
Written to tables/testsets/round-<R>.parquet, whose rows `madmine annotate export --set
test` exports for labelling.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from madmine import names, tables
from madmine.config import Config
from madmine.errors import EvaluationError
from madmine.steps import reads
from madmine.steps.context import StepContext
from madmine.steps.rating.selection import mos_by_image, required_raters
from madmine.workspace import Workspace


@dataclass
class TestSet:
    round: int
    table: pa.Table
    path: str
    candidates: int
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> image ids
    per_class: dict[str, int] = field(default_factory=dict)
    capped: int = 0  # eligible images left out because their class was full

    @property
    def size(self) -> int:
        return self.table.num_rows


def draw_key(seed: int, round_: int, image_id: str) -> str:
    return hashlib.sha256(f"{seed}:{round_}:{image_id}".encode()).hexdigest()


def main_classes(rows: list[dict]) -> dict[str, int]:
    """image_id -> class_id of its foreground candidate row with the largest class_fraction
    (ties: smaller id). Background (0) and ignore (255) rows never name a main class."""
    best: dict[str, tuple[float, int]] = {}
    for r in rows:
        if r.get("class_id") is None or int(r["class_id"]) in (0, 255):
            continue
        key = (-float(r.get("class_fraction") or 0.0), int(r["class_id"]))
        if r["image_id"] not in best or key < best[r["image_id"]]:
            best[r["image_id"]] = key
    return {i: k[1] for i, k in best.items()}


@dataclass(frozen=True)
class TestsetParams:
    """Round R's test set T(R+1); None takes [evaluate]'s value."""

    round: int
    size: int | None = None
    per_class: int | None = None
    seed: int | None = None
    after_s: bool = False  # draw it although S(R+1) was chosen first (biased toward high MOS)
    overwrite: bool = False


def run(ctx: StepContext, params: TestsetParams) -> TestSet:
    """The test-set step: draw T(R+1) from M(R) and write it."""
    return build(ctx.config, ctx.ws, params.round, size=params.size, per_class=params.per_class, seed=params.seed,
                 after_s=params.after_s, overwrite=params.overwrite)


def build(
    config: Config,
    ws: Workspace,
    round_: int,
    *,
    size: int | None = None,
    per_class: int | None = None,
    seed: int | None = None,
    after_s: bool = False,
    overwrite: bool = False,
) -> TestSet:
    """Draw round R's test set T(R+1) and write it; EvaluationError (nothing written) when the rules
    cannot be met, or when an S of round R was chosen already (unless `after_s`: the set then cannot
    take S's images and leans toward high MOS)."""
    size = config.evaluate.testset_size if size is None else size
    per_class = config.evaluate.per_class if per_class is None else per_class
    seed = config.evaluate.seed if seed is None else seed
    if size < 1 or per_class < 1:
        raise EvaluationError("--size and --per-class must be >= 1")
    name = names.testset_name(round_)
    path = tables.TESTSETS.path(ws, round=round_)
    if ws.exists(path) and not overwrite:
        raise EvaluationError(
            f"{name} (round {round_}) already exists ({ws.url(path)}); its images may be labelled already. "
            "Pass --force to draw it again"
        )
    table = reads.candidates(ws, round_, "mad")
    if table is None or table.num_rows == 0:
        raise EvaluationError(f"round {round_} has no MAD candidates; run `madmine select --round {round_}` first")
    chosen_first = sorted(s for s in tables.STRATEGIES if reads.selected_exists(ws, round_, s))
    if chosen_first and not after_s:
        raise EvaluationError(
            f"{names.s_name(round_)} of round {round_} was chosen before {name} ({', '.join(chosen_first)}): {name} "
            f"could not take its images, the lowest MOS of M, and would lean toward images the target does well "
            f"on. Draw {name} before `madmine rate select` (`madmine round` does), or pass --after-s to draw it "
            "anyway, biased"
        )
    rows = table.to_pylist()
    uris = {}
    for r in rows:
        uris.setdefault(r["image_id"], r.get("uri"))
    mains = main_classes(rows)
    votes = mos_by_image(reads.votes(ws, round_))
    in_s = reads.selected_ids(ws, up_to=round_ if after_s else round_ - 1)
    other_tests = {r["image_id"] for k, rs in reads.testsets(ws).items() if k != round_ for r in rs}
    min_raters = required_raters(config, ws)

    dropped: dict[str, list[str]] = {"out_of_domain": [], "in_s": [], "in_other_testset": [], "unrated": [], "no_class": []}
    eligible = []
    for image_id in sorted(uris):
        scores, ood = votes.get(image_id, ([], 0))
        if ood:
            dropped["out_of_domain"].append(image_id)
        elif image_id in in_s:
            dropped["in_s"].append(image_id)
        elif image_id in other_tests:
            dropped["in_other_testset"].append(image_id)
        elif len(scores) < min_raters:
            dropped["unrated"].append(image_id)
        elif image_id not in mains:
            dropped["no_class"].append(image_id)
        else:
            eligible.append((draw_key(seed, round_, image_id), image_id, scores))

    eligible.sort()
    counts: dict[int, int] = {}
    chosen, capped = [], 0
    for _, image_id, scores in eligible:
        if len(chosen) == size:
            break
        k = mains[image_id]
        if counts.get(k, 0) >= per_class:
            capped += 1
            continue
        counts[k] = counts.get(k, 0) + 1
        chosen.append((image_id, k, scores))

    now = datetime.now(UTC)
    class_names = config.classes
    out = pa.Table.from_pylist(
        [
            {
                "round": round_,
                "image_id": image_id,
                "uri": uris[image_id],
                "position": position,
                "main_class": k,
                "class_name": class_names[k] if k < len(class_names) else str(k),
                "mos": sum(scores) / len(scores) if scores else None,
                "n_ratings": len(scores),
                "seed": seed,
                "created_at": now,
                "testset": name,
            }
            for position, (image_id, k, scores) in enumerate(chosen, start=1)
        ],
        schema=tables.TESTSETS.schema,
    )
    if out.num_rows == 0:
        reasons = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in dropped.items() if v)
        raise EvaluationError(f"no image of round {round_}'s {len(uris)} candidates can enter {name} ({reasons})")
    ws.write_parquet(path, out)
    per_class_names = {class_names[k] if k < len(class_names) else str(k): n for k, n in sorted(counts.items())}
    return TestSet(round_, out, ws.url(path), len(uris), {k: v for k, v in dropped.items() if v}, per_class_names, capped)
