"""Everything the report shows, read from the workspace tables; a table that does not exist
yet is None, and the page says which step produces it."""

from __future__ import annotations

from dataclasses import dataclass, field

from madmine import tables
from madmine.config import Config
from madmine.steps import reads
from madmine.steps.evaluation import compete, quality, srcc
from madmine.steps.evaluation import evaluate as ev
from madmine.steps.rating import agreement
from madmine.steps.rating.selection import mos_by_image
from madmine.steps.score.runs import run_records
from madmine.workspace import Workspace


@dataclass
class Facts:
    round: int
    manifest_images: int = 0
    run: dict | None = None
    candidates: list[dict] = field(default_factory=list)
    votes: dict = field(default_factory=dict)
    selected: list[dict] = field(default_factory=list)
    testset: list[dict] = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    models: list[dict] = field(default_factory=list)
    summary: object = None  # pyarrow tables or None
    curves: list = field(default_factory=list)
    quality: object = None
    competitions: object = None
    finetune: list[dict] | None = None
    selectors: list[dict] = field(default_factory=list)  # every selector judged on the round's corpus
    repair: list[dict] = field(default_factory=list)  # the repair table: each version against its parent

    @property
    def candidate_images(self) -> int:
        return len({r["image_id"] for r in self.candidates})

    @property
    def mos(self) -> dict[str, float]:
        return {i: sum(s) / len(s) for i, (s, ood) in mos_by_image(self.votes).items() if s and not ood}

    @property
    def out_of_domain(self) -> int:
        return sum(1 for _, (_, ood) in mos_by_image(self.votes).items() if ood)

    @property
    def raters(self) -> list[str]:
        return sorted({r for _, r in self.votes})

    def score_counts(self) -> dict[str, int]:
        counts = {str(k): 0 for k in range(1, 6)}
        counts["OOD"] = 0
        for vote in self.votes.values():
            counts["OOD" if vote["score"] is None else str(int(vote["score"]))] += 1
        return counts

    def agreement(self) -> tuple[list, float | None]:
        names, _, matrix = agreement.score_matrix(self.votes)
        return agreement.pairwise_spearman(names, matrix), agreement.krippendorff_alpha(matrix)

    def per_class(self, classes: tuple[str, ...]) -> list[tuple[str, int, int, int]]:
        """(class, distinct images, rows partitioned by the target, rows by a competitor)."""
        out = []
        for k, name in enumerate(classes):
            rows = [r for r in self.candidates if r.get("class_id") == k]
            if rows:
                out.append((name, len({r["image_id"] for r in rows}), sum(r.get("direction") == "target" for r in rows),
                            sum(r.get("direction") == "competitor" for r in rows)))
        return out


def gather(config: Config, ws: Workspace, round_: int) -> Facts:
    facts = Facts(round_)
    manifest = tables.MANIFEST.read(ws)
    facts.manifest_images = 0 if manifest is None else manifest.num_rows
    runs = [r for r in run_records(ws) if r.get("status") == "complete"]
    facts.run = runs[-1] if runs else None
    table = reads.candidates(ws, round_, "mad")
    facts.candidates = [] if table is None else table.to_pylist()
    facts.votes = reads.votes(ws, round_)
    selected = tables.SELECTED.read(ws, round=round_, strategy=tables.MAD)
    facts.selected = [] if selected is None else selected.to_pylist()
    facts.testset = reads.testsets(ws).get(round_, [])
    facts.labels = reads.labels(ws)
    facts.models = reads.models_table(ws)
    facts.summary, images = ev.load(ws)
    facts.curves = srcc.curves(images)
    facts.quality = quality.load(ws)
    judged = tables.SELECTORS.read(ws, round=round_)
    facts.selectors = judged.to_pylist() if judged is not None else []
    facts.competitions = compete.results(ws)
    curves = reads.finetune_curves(ws, round_)
    facts.finetune = None if curves is None or curves.num_rows == 0 else curves.to_pylist()
    facts.repair = reads.repair_rows(ws)
    return facts
