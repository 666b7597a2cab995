"""The model table (the paper's Table 1): every model version on T(0) and every labelled T(i).

Names follow the paper: T(0) is the held-out set of the training domain ([finetune]
t0_images / t0_labels), T(i) for i >= 1 the set drawn from M of round i - 1 (its
`testset_round` is i - 1, its `testset_index` i). Each row also says what the model version
was trained on (S(0) for a model as configured; S(0) + S(1) + ... + S(R+1) and the strategy
for the version fine-tuned in round R).

Per (model, test set): the dataset mIoU from one confusion matrix accumulated over the
labelled images (255 skipped, nanmean over classes that occur), the IoU per class, and the
per-image mean mIoU (the mean of each image's own mIoU: a different number, named as such).
Predictions are compared at the label's resolution: a map at model resolution is resized
to the label's size, nearest neighbour, as pairs are in scoring.

Saved whole on every run, replacing the last one: tables/evaluation/evaluation.parquet
(one row per model and test set) and tables/evaluation_images/evaluation.parquet (one row
per model, test set and image, with per-class I and U, from which any subset is scored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from madmine import metrics, names, tables
from madmine.config import Config
from madmine.errors import EvaluationError
from madmine.images import resize_nearest
from madmine.steps import reads
from madmine.steps.evaluation.predictions import ModelMaps, ModelRef, model_refs
from madmine.workspace import Workspace


@dataclass
class Cell:
    """One model on one test set."""

    ref: ModelRef
    round: int
    n_images: int
    image_ids: list[str] = field(default_factory=list)
    intersection: np.ndarray | None = None  # (images, classes), in test-set order
    union: np.ndarray | None = None
    confusion: np.ndarray | None = None
    error: str | None = None

    @property
    def n_labelled(self) -> int:
        return len(self.image_ids)

    @property
    def miou(self) -> float:
        return metrics.dataset_miou(self.confusion) if self.confusion is not None and self.n_labelled else float("nan")

    @property
    def iou(self) -> np.ndarray:
        return metrics.iou_per_class(self.confusion)

    @property
    def image_mious(self) -> np.ndarray:
        if self.intersection is None:
            return np.array([])
        return np.array([metrics.miou_from_sums(i, u) for i, u in zip(self.intersection, self.union)])

    @property
    def per_image_miou(self) -> float:
        values = self.image_mious
        values = values[np.isfinite(values)]
        return float(values.mean()) if values.size else float("nan")


@dataclass
class Evaluation:
    refs: list[ModelRef]
    rounds: list[int]
    cells: dict[tuple[str, str, int], Cell]
    waiting: dict[int, list[str]]  # round -> test images without a label yet
    sizes: dict[int, int]  # round -> |T(R)|
    classes: tuple[str, ...]
    evaluated_at: datetime

    def cell(self, ref: ModelRef, round_: int) -> Cell:
        return self.cells[(ref.name, ref.version, round_)]

    @staticmethod
    def paper_pair(ref: ModelRef, round_: int) -> bool:
        """The paper's pairing, f(i) on T(i+1): the target version that selected M(R) (the original for
        R = 0, MAD's version fine-tuned in round R-1 after) on the test set drawn from M(R)."""
        if round_ < 0 or ref.role != "target" or (ref.selection or tables.MAD) != tables.MAD:
            return False
        return ref.round == round_ - 1 if round_ > 0 else ref.origin == "config"

    def summary_table(self) -> pa.Table:
        rows = []
        for order, ref in enumerate(self.refs):
            for r in self.rounds:
                c = self.cell(ref, r)
                ok = c.error is None and c.n_labelled > 0
                rows.append(
                    {
                        "model": ref.name,
                        "model_version": ref.version,
                        "label": ref.label,
                        "role": ref.role,
                        "origin": ref.origin,
                        "model_round": ref.round,
                        "order": order,
                        "testset_round": r,
                        "testset": names.testset_name(r),
                        "testset_index": names.testset_index(r),
                        "selection": ref.selection,
                        "trained_on": ref.trained_on,
                        "n_images": c.n_images,
                        "n_labelled": c.n_labelled,
                        "miou": c.miou if ok else None,
                        "per_image_miou": c.per_image_miou if ok else None,
                        "iou": [None if np.isnan(v) else float(v) for v in c.iou] if ok else None,
                        "intersection": c.intersection.sum(axis=0).tolist() if ok else None,
                        "union": c.union.sum(axis=0).tolist() if ok else None,
                        "error": c.error,
                        "evaluated_at": self.evaluated_at,
                        "paper_pair": self.paper_pair(ref, r),
                    }
                )
        return pa.Table.from_pylist(rows, schema=tables.EVALUATION.schema)

    def image_table(self) -> pa.Table:
        rows = []
        for ref in self.refs:
            for r in self.rounds:
                c = self.cell(ref, r)
                if c.error is not None or not c.n_labelled:
                    continue
                for k, (image_id, miou) in enumerate(zip(c.image_ids, c.image_mious)):
                    rows.append(
                        {
                            "model": ref.name,
                            "model_version": ref.version,
                            "label": ref.label,
                            "testset_round": r,
                            "position": k + 1,
                            "image_id": image_id,
                            "intersection": c.intersection[k].tolist(),
                            "union": c.union[k].tolist(),
                            "image_miou": None if np.isnan(miou) else float(miou),
                        }
                    )
        return pa.Table.from_pylist(rows, schema=tables.EVALUATION_IMAGES.schema)


def score_maps(
    predictions: dict[str, np.ndarray], truth: dict[str, np.ndarray], image_ids: list[str], num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image I and U (images x classes) and the accumulated confusion matrix (label rows,
    prediction columns), each prediction resized to its label's size."""
    inter = np.zeros((len(image_ids), num_classes), dtype=np.int64)
    union = np.zeros((len(image_ids), num_classes), dtype=np.int64)
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    for k, image_id in enumerate(image_ids):
        label = truth[image_id]
        conf = metrics.confusion(label, resize_nearest(predictions[image_id], label.shape), num_classes)
        inter[k], union[k] = metrics.intersection_union(conf)
        total += conf
    return inter, union, total


def evaluate(config: Config, ws: Workspace, *, show_progress: bool = True) -> Evaluation:
    """Every model version on every test set that has labels; models that cannot be run get an error cell."""
    tests = reads.testsets(ws)
    held = reads.held_out(config)
    if held:
        tests = {names.HELD_OUT: held, **{r: rows for r, rows in tests.items() if r != names.HELD_OUT}}
    if not tests:
        raise EvaluationError(
            "no test set yet: run `madmine testset --round R`, then label it (annotate export --set test), "
            "or name the held-out set in [finetune] t0_images and t0_labels"
        )
    labelled = reads.labels(ws)
    manifest = reads.uris(ws)
    refs = model_refs(config, ws)
    c = config.num_classes
    truth: dict[str, np.ndarray] = {}
    plan: dict[int, list[tuple[str, str]]] = {}
    waiting: dict[int, list[str]] = {}
    for r, rows in tests.items():
        plan[r], waiting[r] = [], []
        for row in rows:
            image_id = row["image_id"]
            label_row = {"image_id": image_id, "mask_uri": row["label_uri"]} if row.get("label_uri") else labelled.get(image_id)
            if label_row is None:
                waiting[r].append(image_id)
                continue
            if image_id not in truth:
                truth[image_id] = reads.load_label(ws, label_row, c)
            plan[r].append((image_id, row.get("uri") or manifest.get(image_id, "")))
    cells: dict[tuple[str, str, int], Cell] = {}
    total = sum(len(items) for items in plan.values()) * len(refs)
    with Progress(
        TextColumn("evaluate [bold]{task.fields[model]}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show_progress,
    ) as progress:
        task = progress.add_task("evaluate", total=total, model="")
        for ref in refs:
            source = ModelMaps(config, ws, ref)
            for r, items in plan.items():
                progress.update(task, model=f"{ref.label} on {names.testset_name(r)}")
                cell = Cell(ref, r, len(tests[r]))
                cells[(ref.name, ref.version, r)] = cell
                if not items:
                    continue
                try:
                    maps = source.maps(items)
                except EvaluationError as exc:
                    cell.error = str(exc)
                    progress.advance(task, len(items))
                    continue
                cell.image_ids = [i for i, _ in items]
                cell.intersection, cell.union, cell.confusion = score_maps(maps, truth, cell.image_ids, c)
                progress.advance(task, len(items))
    return Evaluation(refs, list(tests), cells, waiting, {r: len(v) for r, v in tests.items()}, config.classes, datetime.now(UTC))


def save(ws: Workspace, evaluation: Evaluation) -> tuple[str, str]:
    """Per-image rows first, then the summary: a reader that finds the summary finds both."""
    ws.write_parquet(tables.EVALUATION_IMAGES.path(ws), evaluation.image_table())
    ws.write_parquet(tables.EVALUATION.path(ws), evaluation.summary_table())
    return ws.url(tables.EVALUATION.path(ws)), ws.url(tables.EVALUATION_IMAGES.path(ws))


def load(ws: Workspace) -> tuple[pa.Table | None, pa.Table | None]:
    """The saved evaluation (summary, per-image), or (None, None) before the first one."""
    if not ws.exists(tables.EVALUATION.path(ws)):
        return None, None
    images = ws.read_parquet([tables.EVALUATION_IMAGES.path(ws)]) if ws.exists(tables.EVALUATION_IMAGES.path(ws)) else None
    return ws.read_parquet([tables.EVALUATION.path(ws)]), images


def table1(summary: pa.Table, value: str = "miou") -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """(column headers T(i), held-out T(0) first, rows (model label, values)) in model order:
    the paper's Table 1."""
    rows = summary.to_pylist()
    rounds = sorted({r["testset_round"] for r in rows})
    models: dict[str, dict[int, float | None]] = {}
    order: dict[str, int] = {}
    for r in rows:
        models.setdefault(r["label"], {})[r["testset_round"]] = r[value]
        order[r["label"]] = r["order"]
    labels = sorted(models, key=lambda m: order[m])
    return [names.testset_name(r) for r in rounds], [(m, [models[m].get(r) for r in rounds]) for m in labels]


def paper_pairs(summary: pa.Table) -> set[tuple[str, str]]:
    """(model label, test-set name) of the cells of the paper's pairing, f(i) on T(i+1)."""
    return {(r["label"], r["testset"]) for r in summary.to_pylist() if r.get("paper_pair")}
