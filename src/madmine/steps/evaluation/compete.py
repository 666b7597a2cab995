"""A MAD competition between two models (the paper's Table 2).

The images on which models A and B disagree most tell them apart with the fewest labels.
Two protocols:

- `mad` (the default), the MAD competition the paper runs (Wang et al. 2020), with the same
  SQL as MAD's selection (sql/groups.sql, ranking.sql, competition.sql): the pool is every
  image of the manifest that neither model was trained on (S(0) and, for a fine-tuned version,
  the S of its strategy up to its round); it is partitioned per class k by A's map and,
  separately, by B's map, keeping an image in group k when the map's fraction of class k lies
  inside the size bounds [p_k, q_k] of `madmine bounds`; the top n per group by
  d(A, B) = 1 - mIoU between the two maps are selected ([evaluate] compete_per_class, ties:
  smaller image_id). Raters then see the selected images in the rating app
  (`madmine rate serve --competition ID`): one out-of-domain vote drops an image, and an image
  counts once [rating] min_raters raters (default: every registered rater) voted on it.
- `d-ranking`, the proxy madmine ran before: the whole pool (every image no S(j) of any
  strategy holds) ranked by d(A, B), top n ([evaluate] compete_n), no classes, no size filter,
  no raters.

Both models are then scored against pixel labels of the images that count; the winner has the
higher dataset mIoU on them. Labels come from the labels table, whatever tool drew them: the
selection is saved in tables/competitions/<id>.parquet, an export for labelling
(`--export DIR --format ...`) goes through the same writers as `annotate export` with blank
masks (a mask pre-filled with one model's prediction pulls the labels toward that model; ask
for one with `--prefill MODEL`, at that cost), and `madmine annotate import` brings the masks
back. Re-running the command scores whatever has arrived and never re-selects (the labels
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

from madmine import duck, metrics, tables
from madmine.config import Config
from madmine.errors import EvaluationError
from madmine.images import resize_nearest
from madmine.steps import bounds, reads
from madmine.steps.annotation import FORMATS, coco, cvat, labelstudio
from madmine.steps.annotation.bundle import BLANK, ExportItem, _displayed, _fit, write_images, write_manifest
from madmine.steps.context import StepContext
from madmine.steps.evaluation.evaluate import score_maps
from madmine.steps.evaluation.predictions import ModelMaps, ModelRef, find_ref, model_refs
from madmine.steps.rating import store
from madmine.steps.rating.roundset import RoundSet, read_image
from madmine.steps.rating.selection import mos_by_image, required_raters
from madmine.workspace import Workspace

PROTOCOLS = ("mad", "d-ranking")
D_RANKING = "d-ranking"


@dataclass
class Competition:
    id: str
    a: ModelRef
    b: ModelRef
    selection: list[dict]
    pool: int
    reused: bool
    protocol: str = D_RANKING
    labelled: list[str] = field(default_factory=list)  # scored: labelled, and (mad) in domain by every rater
    waiting: list[str] = field(default_factory=list)  # waiting for pixel labels
    vetoed: list[str] = field(default_factory=list)  # (mad) a rater marked them out of domain
    waiting_raters: list[str] = field(default_factory=list)  # (mad) short of [rating] min_raters votes
    min_raters: int = 0
    miou_a: float = float("nan")
    miou_b: float = float("nan")
    per_image_a: float = float("nan")
    per_image_b: float = float("nan")
    wins_a: int = 0
    wins_b: int = 0
    diff_low: float = float("nan")  # 95% paired-bootstrap interval of miou_a - miou_b over the images
    diff_high: float = float("nan")
    sign_p: float = float("nan")  # sign test of the per-image wins (two-sided)

    @property
    def rating_key(self) -> str:
        return rating_key(self.id)

    @property
    def winner(self) -> str | None:
        """The model whose dataset mIoU is higher with the whole 95% interval of the difference on its side;
        None (no winner) when the interval holds 0: these images cannot tell the two apart."""
        if not self.labelled or not (np.isfinite(self.diff_low) and np.isfinite(self.diff_high)):
            return None
        if self.diff_low > 0:
            return self.a.label
        if self.diff_high < 0:
            return self.b.label
        return None

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
            "diff_low": num(self.diff_low),
            "diff_high": num(self.diff_high),
            "sign_p": num(self.sign_p),
            "evaluated_at": datetime.now(UTC),
            "protocol": self.protocol,
            "vetoed": len(self.vetoed),
            "waiting_raters": len(self.waiting_raters),
        }
        return pa.Table.from_pylist([row], schema=tables.COMPETITION_RESULTS.schema)


def competition_id(a: ModelRef, b: ModelRef, protocol: str) -> str:
    safe = re.compile(r"[^A-Za-z0-9_.-]+")
    return f"{safe.sub('_', a.label.replace('@', '-'))}--vs--{safe.sub('_', b.label.replace('@', '-'))}--{protocol}"


def rating_key(cid: str) -> str:
    """The competition's set in the rating storage: rating/events/compete-<id>/."""
    return f"compete-{cid}"


def training_ids(ws: Workspace, ref: ModelRef, s0: set[str]) -> set[str]:
    """Images a model version learned from: S(0) for a target, plus, for a fine-tuned version, what every
    version of its line added, parent by parent: each the S of its strategy in the rounds after its
    parent's (a version built on another chain with `finetune --parent` learned that chain's S too).
    A competitor's training set is not known here."""
    if ref.role != "target":
        return set()
    out = set(s0)
    if ref.origin != "models table" or ref.round is None:
        return out
    rows = {r["model_version"]: r for r in reads.models_table(ws) if r["model"] == ref.name}
    version, seen = ref.version, set()
    while version in rows and version not in seen:
        seen.add(version)
        row = rows[version]
        parent = rows.get(row.get("parent_version"))
        after = int(parent["round"]) if parent is not None and parent.get("round") is not None else -1
        chain = reads.selected_ids(ws, strategy=row.get("selection") or tables.MAD, up_to=int(row["round"]))
        out |= {i for i, r in chain.items() if r > after}
        version = row.get("parent_version")
    return out


def rank_pool(maps_a: dict[str, np.ndarray], maps_b: dict[str, np.ndarray], num_classes: int, n: int) -> list[tuple[str, float]]:
    """Top n (image_id, d) by d descending, ties by image_id; images without a valid pixel drop out."""
    scored = []
    for image_id, a in maps_a.items():
        d = metrics.pair_summary(a, resize_nearest(maps_b[image_id], a.shape), num_classes)[2]
        if d is not None:
            scored.append((-d, image_id))
    scored.sort()
    return [(image_id, -neg) for neg, image_id in scored[:n]]


def _rows(cid: str, a: ModelRef, b: ModelRef, protocol: str, picked: list[dict], uris: dict[str, str], pool: int) -> list[dict]:
    now = datetime.now(UTC)
    return [
        {
            "competition": cid, "image_id": r["image_id"], "uri": uris[r["image_id"]], "d": r["d"], "rank": r["rank"],
            "model_a": a.name, "version_a": a.version, "model_b": b.name, "version_b": b.version, "pool": pool,
            "created_at": now, "protocol": protocol, "direction": r.get("direction"), "class_id": r.get("class_id"),
            "class_name": r.get("class_name"), "class_fraction": r.get("class_fraction"), "group_rank": r.get("group_rank"),
        }
        for r in picked
    ]


def _save(ws: Workspace, cid: str, rows: list[dict]) -> None:
    ws.write_parquet(tables.COMPETITIONS.path(ws, competition=cid), pa.Table.from_pylist(rows, schema=tables.COMPETITIONS.schema))


def _pair(a: ModelRef, b: ModelRef) -> str:
    """The two models as a progress bar can show them: names, or full labels where the names are the same."""
    return f"{a.name}, {b.name}" if a.name != b.name else f"{a.label}, {b.label}"


def _select_ranking(config: Config, ws: Workspace, a: ModelRef, b: ModelRef, cid: str, n: int,
                    chunk: int = 64) -> tuple[list[dict], int]:
    """The d-ranking proxy: the top n of the whole pool by d(A, B)."""
    trained = reads.selected_ids(ws)
    pool = sorted((i, u) for i, u in reads.uris(ws).items() if i not in trained)
    if not pool:
        raise EvaluationError("the pool is empty: ingest images (`madmine ingest`) that no S(j) holds")
    src_a, src_b = ModelMaps(config, ws, a), ModelMaps(config, ws, b)
    best: list[tuple[str, float]] = []
    for start in track(range(0, len(pool), chunk), description=f"d({_pair(a, b)}) over {len(pool)} images"):
        items = pool[start : start + chunk]
        best = sorted(best + rank_pool(src_a.maps(items), src_b.maps(items), config.num_classes, n), key=lambda t: (-t[1], t[0]))[:n]
    picked = [{"image_id": i, "d": d, "rank": k} for k, (i, d) in enumerate(best, start=1)]
    rows = _rows(cid, a, b, D_RANKING, picked, dict(pool), len(pool))
    _save(ws, cid, rows)
    return rows, len(pool)


def pool_tables(config: Config, ws: Workspace, a: ModelRef, b: ModelRef, pool: list[tuple[str, str]],
                chunk: int = 64) -> tuple[pa.Table, pa.Table]:
    """The two models over the pool in the shape selection reads: per-class pixel counts of each
    map (A as the 'target', B as the competitor 'B') and d(A, B) at A's resolution."""
    src_a, src_b = ModelMaps(config, ws, a), ModelMaps(config, ws, b)
    c = config.num_classes
    predictions, pairs = [], []
    for start in track(range(0, len(pool), chunk), description=f"{_pair(a, b)} over {len(pool)} images"):
        items = pool[start : start + chunk]
        maps_a, maps_b = src_a.maps(items), src_b.maps(items)
        for image_id, _ in items:
            ma, mb = maps_a[image_id], maps_b[image_id]
            for model, role, m in (("A", "target", ma), ("B", "competitor", mb)):
                predictions.append({"image_id": image_id, "model": model, "role": role, "height": m.shape[0],
                                    "width": m.shape[1], "class_pixels": metrics.class_pixels(m, c).tolist()})
            pairs.append({"image_id": image_id, "competitor": "B",
                          "d": metrics.pair_summary(ma, resize_nearest(mb, ma.shape), c)[2]})
    schema_p = pa.schema([("image_id", pa.string()), ("model", pa.string()), ("role", pa.string()), ("height", pa.int32()),
                          ("width", pa.int32()), ("class_pixels", pa.list_(pa.int64()))])
    schema_d = pa.schema([("image_id", pa.string()), ("competitor", pa.string()), ("d", pa.float64())])
    return pa.Table.from_pylist(predictions, schema=schema_p), pa.Table.from_pylist(pairs, schema=schema_d)


def _select_mad(config: Config, ws: Workspace, a: ModelRef, b: ModelRef, cid: str, per_class: int) -> tuple[list[dict], int]:
    """The MAD competition's selection: top `per_class` by d per (partitioning model, class) group,
    over the images neither model trained on, inside the size bounds."""
    s0 = reads.s0_image_ids(config)
    trained = training_ids(ws, a, s0) | training_ids(ws, b, s0)
    pool = sorted((i, u) for i, u in reads.uris(ws).items() if i not in trained)
    if not pool:
        raise EvaluationError("the pool is empty: ingest images (`madmine ingest`) that neither model was trained on")
    con = duck.connect(ws)
    try:
        if "bounds" not in duck.create_views(con, ws, ("bounds",)):
            raise EvaluationError(f"no size bounds in workspace {ws.uri}: run `madmine bounds LABELS_DIR` (the "
                                  "competition's groups use them, as selection does), or pass --protocol d-ranking")
        bounds.check_classes(con, config.classes)
        predictions, pairs = pool_tables(config, ws, a, b, pool)
        con.register("run_predictions", predictions)
        con.register("run_pairs", pairs)
        duck.register_empty(con, "exclusions", pa.schema([("image_id", pa.string()), ("reason", pa.string())]))
        duck.set_variables(con, class_ids=list(range(1, config.num_classes)), n3=per_class,
                           class_names=list(config.classes))
        for step in ("groups", "ranking"):
            duck.run_file(con, step)
        picked = duck.run_file(con, "competition").to_arrow_table().to_pylist()
    finally:
        con.close()
    rows = _rows(cid, a, b, "mad", picked, dict(pool), len(pool))
    _save(ws, cid, rows)
    return rows, len(pool)


def _votes(ws: Workspace, cid: str) -> dict[str, tuple[list[int], int]]:
    return mos_by_image(store.latest(store.load_events(ws, rating_key(cid))))


@dataclass(frozen=True)
class CompeteParams:
    """A MAD competition between two model versions (NAME, NAME@VERSION or NAME@STRATEGY)."""

    a: str
    b: str
    n: int | None = None  # mad: images per (direction, class) group; d-ranking: images in all ([evaluate])
    reselect: bool = False
    protocol: str | None = None  # mad | d-ranking; default [evaluate] compete_protocol


def run(ctx: StepContext, params: CompeteParams) -> Competition:
    """The competition step: select (or read the saved selection), then score both models where labelled."""
    return compete(ctx.config, ctx.ws, params.a, params.b, n=params.n, reselect=params.reselect,
                   protocol=params.protocol)


def compete(config: Config, ws: Workspace, a_name: str, b_name: str, *, n: int | None = None, reselect: bool = False,
            protocol: str | None = None) -> Competition:
    """Select (or read the saved selection), then score both models on the images that count.
    `n`: images per (direction, class) group under `mad`, images in all under `d-ranking`."""
    protocol = config.evaluate.compete_protocol if protocol is None else protocol
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    refs = model_refs(config, ws)
    a, b = find_ref(refs, a_name), find_ref(refs, b_name)
    if a.key == b.key:
        raise EvaluationError(f"{a_name!r} and {b_name!r} are the same model version; a competition needs two")
    if n is None:
        n = config.evaluate.compete_per_class if protocol == "mad" else config.evaluate.compete_n
    if n < 1:
        raise EvaluationError("--n must be >= 1")
    cid = competition_id(a, b, protocol)
    path = tables.COMPETITIONS.path(ws, competition=cid)
    if ws.exists(path) and not reselect:
        selection = ws.read_parquet([path]).to_pylist()
        comp = Competition(cid, a, b, selection, int(selection[0]["pool"]) if selection else 0, reused=True, protocol=protocol)
    else:
        if protocol == "mad":
            selection, pool = _select_mad(config, ws, a, b, cid, n)
        else:
            selection, pool = _select_ranking(config, ws, a, b, cid, n)
        comp = Competition(cid, a, b, selection, pool, reused=False, protocol=protocol)
    ids = [r["image_id"] for r in selection]
    if protocol == "mad":
        comp.min_raters = required_raters(config, ws)
        votes = _votes(ws, cid)
        comp.vetoed = [i for i in ids if votes.get(i, ([], 0))[1] > 0]
        comp.waiting_raters = [i for i in ids if i not in comp.vetoed and len(votes.get(i, ([], 0))[0]) < comp.min_raters]
        eligible = [i for i in ids if i not in comp.vetoed and i not in comp.waiting_raters]
    else:
        eligible = ids
    labelled = reads.labels(ws)
    comp.labelled = [i for i in eligible if i in labelled]
    comp.waiting = [i for i in eligible if i not in labelled]
    if comp.labelled:
        truth = {i: reads.load_label(ws, labelled[i], config.num_classes) for i in comp.labelled}
        uris = {r["image_id"]: r["uri"] for r in selection}
        items = [(i, uris[i]) for i in comp.labelled]
        scores = {}
        for side, ref in (("a", a), ("b", b)):
            inter, union, conf = score_maps(ModelMaps(config, ws, ref).maps(items), truth, comp.labelled, config.num_classes)
            per_image = np.array([metrics.miou_from_sums(i, u) for i, u in zip(inter, union)])
            scores[side] = (metrics.dataset_miou(conf), per_image, inter, union)
        comp.miou_a, comp.miou_b = scores["a"][0], scores["b"][0]
        pa_, pb_ = scores["a"][1], scores["b"][1]
        comp.per_image_a, comp.per_image_b = float(np.nanmean(pa_)), float(np.nanmean(pb_))
        comp.wins_a, comp.wins_b = int((pa_ > pb_).sum()), int((pb_ > pa_).sum())
        _, comp.diff_low, comp.diff_high = metrics.paired_bootstrap_miou(scores["a"][2], scores["a"][3], scores["b"][2],
                                                                         scores["b"][3], seed=config.evaluate.seed)
        comp.sign_p = metrics.sign_test(comp.wins_a, comp.wins_b)
    ws.write_parquet(tables.COMPETITION_RESULTS.path(ws, competition=cid), comp.result_table())
    return comp


def results(ws: Workspace) -> pa.Table | None:
    """Every saved competition result (for the report)."""
    return tables.COMPETITION_RESULTS.read(ws)


def _saved(ws: Workspace, cid: str) -> list[dict]:
    path = tables.COMPETITIONS.path(ws, competition=cid)
    if not ws.exists(path):
        known = [(tables.COMPETITIONS.keys_of(p) or {}).get("competition") for p in tables.COMPETITIONS.files(ws)]
        raise EvaluationError(f"no competition {cid!r}; competitions: {', '.join(k for k in known if k) or 'none'} "
                              "(run `madmine compete A B` first)")
    return ws.read_parquet([path]).to_pylist()


def _ref_of(config: Config, ws: Workspace, name: str, version: str) -> ModelRef:
    for ref in model_refs(config, ws):
        if ref.key == (name, version):
            return ref
    raise EvaluationError(f"model {name}@{version} of the competition is no longer known (config or models table)")


def rating_set(config: Config, ws: Workspace, cid: str) -> RoundSet:
    """The competition's images for the rating app: A's map shown as the target and B's as the
    competitor, named only 'A' and 'B' (raters judge blind); votes go to rating/events/compete-<id>/."""
    rows = _saved(ws, cid)
    if not rows:
        raise EvaluationError(f"competition {cid!r} selected no image; nothing to rate")
    refs = {"A": _ref_of(config, ws, rows[0]["model_a"], rows[0]["version_a"]),
            "B": _ref_of(config, ws, rows[0]["model_b"], rows[0]["version_b"])}
    uris = {r["image_id"]: r["uri"] for r in rows}
    items = sorted(uris.items())
    cache: dict[str, dict[str, np.ndarray]] = {}

    def load(model: str, image_id: str) -> np.ndarray:
        if model not in refs:
            raise EvaluationError(f"no model {model!r} in competition {cid}")
        if model not in cache:
            cache[model] = ModelMaps(config, ws, refs[model]).maps(items)
        return cache[model][image_id]

    return RoundSet(round=rating_key(cid), strategy="compete", image_ids=tuple(sorted(uris)), uris=uris, target="A",
                    versions={"A": refs["A"].version, "B": refs["B"].version}, competitors=("B",), run_id="",
                    loader=load)


def export(config: Config, ws: Workspace, comp: Competition, fmt: str, out: Path, only_waiting: bool = True,
           prefill: str | None = None) -> tuple[int, list[Path]]:
    """The competition's images for an annotation tool, through the writers of `madmine annotate
    export` (so `annotate import` reads them back): those waiting for labels (in domain, rated,
    under `mad`), with blank masks unless `prefill` names a model ('a', 'b' or any model reference)."""
    if fmt not in FORMATS:
        raise EvaluationError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if out.exists() and any(out.iterdir()):
        raise EvaluationError(f"{out} is not empty; export into a new folder so no older files mix in")
    rows = [r for r in comp.selection if not only_waiting or r["image_id"] in comp.waiting]
    if not rows:
        raise EvaluationError("no image of the competition waits for labels; nothing to export"
                              + (f" ({len(comp.waiting_raters)} wait for raters)" if comp.waiting_raters else ""))
    by = None
    if prefill is not None and prefill.strip().lower() not in BLANK:
        by = {"a": comp.a, "b": comp.b}.get(prefill.strip().lower()) or find_ref(model_refs(config, ws), prefill)
    maps = ModelMaps(config, ws, by).maps([(r["image_id"], r["uri"]) for r in rows]) if by is not None else {}
    items = []
    for r in track(rows, description=f"gather {len(rows)} images"):
        data, ext, img = _displayed(read_image(r["uri"], config.storage_options), config.scoring.max_pixels)
        mask = _fit(maps[r["image_id"]], *img.size) if by is not None else None
        items.append(ExportItem(r["image_id"], f"{r['image_id']}{ext}", data, img.size[0], img.size[1], mask))
    meta = {
        "round": None,
        "set": f"compete {comp.id}",
        "prefill": by.label if by is not None else None,
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
