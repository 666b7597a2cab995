"""The arena: the fine-tuned targets compared on wild images that no selection ever saw.

Its own workspace ingests the held-out wild set and lists every target variant as a model
of the target's design (the original, MAD after each round, entropy and random after
round 0). Evaluation scores each on all of the held-out set (its labels are the world's,
named as the held-out T(0) of this workspace), and `madmine compete` runs MAD
competitions between them: the images on which two variants disagree most, labelled by
the simulated annotator through a COCO export and `annotate import`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from madmine import metrics, tables
from madmine.config import load_config
from madmine.errors import MadmineError
from madmine.steps import bounds, ingest
from madmine.steps.context import StepContext
from madmine.steps.evaluation import compete as competition
from madmine.steps.evaluation.run import EvaluateParams
from madmine.steps.evaluation.run import run as run_evaluation
from madmine_demo.measure import TAU
from madmine_demo.people.annotator import label_and_import
from madmine_demo.people.raters import rate_competition
from madmine_demo.world.datasets import Dataset
from madmine_demo.world.truth import Truth


@dataclass
class ArenaResult:
    models: list[str]
    miou: dict[str, float]  # dataset mIoU on the held-out wild set
    per_image: dict[str, float]
    failures: dict[str, float]  # fraction of images with per-image mIoU < TAU
    by_kind: dict[str, dict[str, float]]  # model -> kind -> dataset mIoU
    failures_by_kind: dict[str, dict[str, float]]  # model -> kind -> fraction of images with per-image mIoU < TAU
    gain: dict[str, tuple[float, float, float]]  # model -> dataset mIoU minus the original's: (value, 2.5%, 97.5%)
    competitions: list[competition.Competition]
    images: int
    image_mious: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> image_id -> per-image mIoU
    kinds: dict[str, str] = field(default_factory=dict)  # image_id -> kind of scene


def _by_kind(image_rows: list[dict], truth: Truth) -> dict[str, dict[str, float]]:
    """model -> kind of scene -> dataset mIoU over the held-out images of that kind (from per-image I and U)."""
    sums: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for r in image_rows:
        kind = truth.kind(r["image_id"])
        inter, union = np.asarray(r["intersection"]), np.asarray(r["union"])
        per = sums.setdefault(r["model"], {})
        if kind in per:
            per[kind] = (per[kind][0] + inter, per[kind][1] + union)
        else:
            per[kind] = (inter, union)
    return {m: {k: metrics.miou_from_sums(i, u) for k, (i, u) in sorted(per.items())} for m, per in sums.items()}


def _failures_by_kind(image_rows: list[dict], truth: Truth) -> dict[str, dict[str, float]]:
    """model -> kind of scene -> the fraction of its images with per-image mIoU below TAU."""
    by: dict[str, dict[str, list[bool]]] = {}
    for r in image_rows:
        if r["image_miou"] is not None:
            by.setdefault(r["model"], {}).setdefault(truth.kind(r["image_id"]), []).append(r["image_miou"] < TAU)
    return {m: {k: float(np.mean(v)) for k, v in sorted(per.items())} for m, per in by.items()}


def paired_bootstrap(image_rows: list[dict], model: str, base: str, resamples: int = 1000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Dataset mIoU of `model` minus that of `base` on the same images, with a 95% interval from
    resampling the images (both models on each draw): how much of a difference the choice of
    test images alone could make. It says nothing of the spread between training runs."""
    per = {}
    for name in (model, base):
        rows = sorted((r for r in image_rows if r["model"] == name), key=lambda r: r["image_id"])
        per[name] = (np.array([r["intersection"] for r in rows], np.float64), np.array([r["union"] for r in rows], np.float64))
    (ia, ua), (ib, ub) = per[model], per[base]
    return metrics.paired_bootstrap_miou(ia, ua, ib, ub, resamples, seed)


def run_arena(root: Path, config_text: str, heldout: Dataset, truth: Truth, pairs: list[tuple[str, str]],
              show_progress: bool = False, s0_labels: Path | None = None) -> ArenaResult:
    """Write the arena's config, ingest the held-out set, evaluate every variant, run the competitions
    (none for the probe: equal numbers of every kind of scene, to measure failure rates per kind).

    The competitions follow the MAD protocol, as `madmine compete` runs it on real data: the arena's
    workspace gets the size bounds of S(0) (`madmine bounds`), the simulated raters judge each
    competition's images (an out-of-domain vote keeps one out), the annotator labels what counts."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "madmine.toml").write_text(config_text)
    config = load_config(root / "madmine.toml")
    ctx = StepContext.of(config, show_progress=show_progress)
    ws = ctx.ws
    ingested = ingest.run(ctx, ingest.IngestParams.from_config(config, [str(heldout.images)]))
    if ingested.failure:
        raise MadmineError(ingested.failure)
    truth.add_manifest(ws)

    evaluation = run_evaluation(ctx, EvaluateParams(quality=False)).evaluation
    summary = evaluation.summary_table().to_pylist()
    images = evaluation.image_table().to_pylist()
    names = [m.name for m in config.models]
    miou = {r["model"]: r["miou"] for r in summary}
    per_image = {r["model"]: r["per_image_miou"] for r in summary}
    failures = {}
    for name in names:
        values = [r["image_miou"] for r in images if r["model"] == name and r["image_miou"] is not None]
        failures[name] = float(np.mean(np.asarray(values) < TAU)) if values else float("nan")

    results = []
    if pairs and s0_labels is not None and not tables.BOUNDS.exists(ws):
        bounds.run(ctx, bounds.BoundsParams(str(s0_labels)))
    for a, b in pairs:
        params = competition.CompeteParams(a, b, protocol="mad")
        comp = competition.run(ctx, params)
        if comp.waiting_raters:
            rate_competition(ws, config, truth, comp.id)
            comp = competition.run(ctx, params)
        if comp.waiting:
            folder = root / "exports" / comp.id
            if folder.exists():
                shutil.rmtree(folder)
            competition.export(config, ws, comp, "coco", folder)
            label_and_import(ws, config, folder, truth)
            comp = competition.run(ctx, params)
        results.append(comp)
    base = config.target.name
    gain = {name: paired_bootstrap(images, name, base) for name in names if name != base}
    image_mious: dict[str, dict[str, float]] = {}
    for r in images:
        image_mious.setdefault(r["model"], {})[r["image_id"]] = float("nan") if r["image_miou"] is None else r["image_miou"]
    return ArenaResult(names, miou, per_image, failures, _by_kind(images, truth), _failures_by_kind(images, truth), gain,
                       results, len(heldout.kinds()), image_mious, {r["image_id"]: truth.kind(r["image_id"]) for r in images})
