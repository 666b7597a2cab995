"""A MAD competition between two models (the paper's Table 2).

The images on which models A and B disagree most tell them apart with the fewest labels:
the pool (every image of the manifest that no S(j) trained on) is ranked by
d(A, B) = 1 - mIoU between their maps (metrics.pair_summary, B resized to A's size, nearest),
the top n kept (ties: smaller image_id), and both models are scored against pixel labels of
those images. The winner has the higher dataset mIoU on them.

Labels come from the labels table, whatever tool drew them: the selection is saved in
tables/competitions/<id>.parquet, an export for labelling (`--export DIR --format ...`,
pre-annotated with A's prediction) goes through the same writers as `annotate export`, and
`madmine annotate import` brings the masks back. Images still without a label are listed as
waiting; re-running the command scores whatever has arrived and never re-selects (the labels
were drawn for that selection) unless asked to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.progress import track

from madmine import metrics, tables
from madmine.config import Config
from madmine.images import resize_nearest
from madmine.steps.annotation import FORMATS, coco, cvat, labelstudio
from madmine.steps.annotation.bundle import ExportItem, _displayed, _fit, write_images, write_manifest
from madmine.steps.evaluation import sources
from madmine.steps.evaluation.evaluate import score_maps
from madmine.steps.evaluation.predictions import ModelMaps, ModelRef, find_ref, model_refs
from madmine.steps.evaluation.sources import EvaluationError
from madmine.steps.rating.roundset import read_image
from madmine.workspace import Workspace


@dataclass
class Competition:
    id: str
    a: ModelRef
    b: ModelRef
    selection: list[dict]
    pool: int
    reused: bool
    labelled: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    miou_a: float = float("nan")
    miou_b: float = float("nan")
    per_image_a: float = float("nan")
    per_image_b: float = float("nan")
    wins_a: int = 0
    wins_b: int = 0

    @property
    def winner(self) -> str | None:
        if not self.labelled or not np.isfinite(self.miou_a) or not np.isfinite(self.miou_b) or self.miou_a == self.miou_b:
            return None
        return self.a.label if self.miou_a > self.miou_b else self.b.label

    def result_table(self) -> pa.Table:
        def num(x):
            return None if not np.isfinite(x) else float(x)

        row = {
            "competition": self.id,
            "model_a": self.a.label,
            "model_b": self.b.label,
            "selected": len(self.selection),
            "labelled": len(self.labelled),
            "miou_a": num(self.miou_a),
            "miou_b": num(self.miou_b),
            "per_image_miou_a": num(self.per_image_a),
            "per_image_miou_b": num(self.per_image_b),
            "wins_a": self.wins_a,
            "wins_b": self.wins_b,
            "winner": self.winner,
            "evaluated_at": datetime.now(UTC),
        }
        return pa.Table.from_pylist([row], schema=tables.COMPETITION_RESULTS.schema)


def competition_id(a: ModelRef, b: ModelRef) -> str:
    safe = re.compile(r"[^A-Za-z0-9_.-]+")
    return f"{safe.sub('_', a.label.replace('@', '-'))}--vs--{safe.sub('_', b.label.replace('@', '-'))}"


def rank_pool(maps_a: dict[str, np.ndarray], maps_b: dict[str, np.ndarray], num_classes: int, n: int) -> list[tuple[str, float]]:
    """Top n (image_id, d) by d descending, ties by image_id; images without a valid pixel drop out."""
    scored = []
    for image_id, a in maps_a.items():
        d = metrics.pair_summary(a, resize_nearest(maps_b[image_id], a.shape), num_classes)[2]
        if d is not None:
            scored.append((-d, image_id))
    scored.sort()
    return [(image_id, -neg) for neg, image_id in scored[:n]]


def _select(config: Config, ws: Workspace, a: ModelRef, b: ModelRef, cid: str, n: int, chunk: int = 64) -> tuple[list[dict], int]:
    trained = sources.selected_ids(ws)
    pool = sorted((i, u) for i, u in sources.uris(ws).items() if i not in trained)
    if not pool:
        raise EvaluationError("the pool is empty: ingest images (`madmine ingest`) that no S(j) holds")
    src_a, src_b = ModelMaps(config, ws, a), ModelMaps(config, ws, b)
    best: list[tuple[str, float]] = []
    for start in track(range(0, len(pool), chunk), description=f"d({a.label}, {b.label}) over {len(pool)} images"):
        items = pool[start : start + chunk]
        best = sorted(best + rank_pool(src_a.maps(items), src_b.maps(items), config.num_classes, n), key=lambda t: (-t[1], t[0]))[:n]
    uris = dict(pool)
    now = datetime.now(UTC)
    rows = [
        {
            "competition": cid,
            "image_id": image_id,
            "uri": uris[image_id],
            "d": d,
            "rank": k,
            "model_a": a.name,
            "version_a": a.version,
            "model_b": b.name,
            "version_b": b.version,
            "pool": len(pool),
            "created_at": now,
        }
        for k, (image_id, d) in enumerate(best, start=1)
    ]
    ws.write_parquet(tables.COMPETITIONS.path(ws, competition=cid), pa.Table.from_pylist(rows, schema=tables.COMPETITIONS.schema))
    return rows, len(pool)


def compete(config: Config, ws: Workspace, a_name: str, b_name: str, *, n: int | None = None, reselect: bool = False) -> Competition:
    refs = model_refs(config, ws)
    a, b = find_ref(refs, a_name), find_ref(refs, b_name)
    if a.key == b.key:
        raise EvaluationError(f"{a_name!r} and {b_name!r} are the same model version; a competition needs two")
    n = config.evaluate.compete_n if n is None else n
    if n < 1:
        raise EvaluationError("--n must be >= 1")
    cid = competition_id(a, b)
    path = tables.COMPETITIONS.path(ws, competition=cid)
    if ws.exists(path) and not reselect:
        selection = ws.read_parquet([path]).to_pylist()
        comp = Competition(cid, a, b, selection, int(selection[0]["pool"]) if selection else 0, reused=True)
    else:
        selection, pool = _select(config, ws, a, b, cid, n)
        comp = Competition(cid, a, b, selection, pool, reused=False)
    labelled = sources.labels(ws)
    comp.labelled = [r["image_id"] for r in selection if r["image_id"] in labelled]
    comp.waiting = [r["image_id"] for r in selection if r["image_id"] not in labelled]
    if comp.labelled:
        truth = {i: sources.load_label(ws, labelled[i], config.num_classes) for i in comp.labelled}
        items = [(r["image_id"], r["uri"]) for r in selection if r["image_id"] in labelled]
        scores = {}
        for side, ref in (("a", a), ("b", b)):
            inter, union, conf = score_maps(ModelMaps(config, ws, ref).maps(items), truth, comp.labelled, config.num_classes)
            per_image = np.array([metrics.miou_from_sums(i, u) for i, u in zip(inter, union)])
            scores[side] = (metrics.dataset_miou(conf), per_image)
        comp.miou_a, comp.miou_b = scores["a"][0], scores["b"][0]
        pa_, pb_ = scores["a"][1], scores["b"][1]
        comp.per_image_a, comp.per_image_b = float(np.nanmean(pa_)), float(np.nanmean(pb_))
        comp.wins_a, comp.wins_b = int((pa_ > pb_).sum()), int((pb_ > pa_).sum())
    ws.write_parquet(tables.COMPETITION_RESULTS.path(ws, competition=cid), comp.result_table())
    return comp


def results(ws: Workspace) -> pa.Table | None:
    """Every saved competition result (for the report)."""
    return tables.COMPETITION_RESULTS.read(ws)


def export(config: Config, ws: Workspace, comp: Competition, fmt: str, out: Path, only_waiting: bool = True) -> tuple[int, list[Path]]:
    """The competition's images for an annotation tool, pre-annotated with A's prediction,
    through the writers of `madmine annotate export` (so `annotate import` reads them back)."""
    if fmt not in FORMATS:
        raise EvaluationError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if out.exists() and any(out.iterdir()):
        raise EvaluationError(f"{out} is not empty; export into a new folder so no older files mix in")
    rows = [r for r in comp.selection if not only_waiting or r["image_id"] in comp.waiting]
    if not rows:
        raise EvaluationError("every image of the competition is labelled already; nothing to export")
    maps = ModelMaps(config, ws, comp.a).maps([(r["image_id"], r["uri"]) for r in rows])
    items = []
    for r in track(rows, description=f"gather {len(rows)} images"):
        data, ext, img = _displayed(read_image(r["uri"], config.storage_options), config.scoring.max_pixels)
        mask = _fit(maps[r["image_id"]], *img.size)
        items.append(ExportItem(r["image_id"], f"{r['image_id']}{ext}", data, img.size[0], img.size[1], mask))
    meta = {
        "round": None,
        "set": f"compete {comp.id}",
        "target": comp.a.name,
        "target_version": comp.a.version,
        "classes": list(config.classes),
        "created_at": datetime.now(UTC).isoformat(),
        "images": [{"image_id": i.image_id, "file": i.file, "width": i.width, "height": i.height} for i in items],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_images(items, out)
    writer = {"labelstudio": lambda: labelstudio.export(items, meta, out, config, labelstudio.DEFAULT_PREFIX),
              "cvat": lambda: cvat.export(items, meta, out, config),
              "coco": lambda: coco.export(items, meta, out, config)}[fmt]
    files = writer()
    write_manifest(out, meta, fmt)
    return len(items), files
