"""Every selector judged as a detector of failures over the whole corpus (`madmine evaluate --selectors`).

A selection strategy is a score over the corpus and a budget. Judged on the images it picked (a
yield), it says nothing of what it missed; judged on rated images of its own round, it is judged
on a population another selector chose. Here each selector scores every image of a round's
scoring run, and is judged on a pool that no selector chose: the labelled images of the corpus
sample (`madmine sample`, a uniform random draw; in the demo, the whole corpus and its truth).

Selectors: d max and d mean over the competitors, d against each competitor, the target's entropy,
its max-softmax (low confidence first), MAD (the image's best rank in MAD's groups, d breaking
ties; images in no group last), the learned predictor and hybrid (MAD's groups by the predictor),
and random. The learned predictor is the one fitted on the ratings of rounds before R
(madmine.steps.learned): judged on round R's corpus, it is judged prospectively.

Outcomes: an image is out of domain (its own outcome, never a failure), else a failure when the
target's per-image mIoU is below tau. Measures, each with a 95% bootstrap interval over the pool's
images: AUROC and AUPR-Error (failures positive) and FPR at 95% TPR over the in-domain images;
Spearman and Pearson of the score with the per-image mIoU (a good selector's are negative);
precision of its top |M| and top n4, scaled to the pool, and the out-of-domain share among them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from madmine import duck, metrics, tables
from madmine.errors import EvaluationError, MadmineError
from madmine.images import resize_nearest
from madmine.steps import learned, reads
from madmine.steps.context import StepContext
from madmine.steps.evaluation.predictions import ModelMaps, ModelRef, model_refs
from madmine.steps.score.runs import read_record

NO_GROUP = -1e6  # MAD's score of an image in no group: below every grouped image


@dataclass(frozen=True)
class SelectorsParams:
    round: int
    run_id: str | None = None  # default: the run round R's MAD candidates came from
    tau: float | None = None  # default: [evaluate] tau
    resamples: int = 300  # bootstrap draws for the intervals


@dataclass
class Outcome:
    miou: float  # the target's per-image mIoU against the label (NaN without a valid pixel)
    out_of_domain: bool


@dataclass
class Judged:
    round: int
    run_id: str
    rows: list[dict] = field(default_factory=list)  # one per selector, the SELECTORS schema
    pool: int = 0

    def table(self) -> pa.Table:
        return tables.SELECTORS.from_rows(self.rows)


def random_score(seed: int, image_id: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}:selector:{image_id}".encode()).digest()[:8], "little") / 2**64


def round_run(ws, round_: int, run_id: str | None) -> dict:
    """The scoring run a round's MAD candidates came from (or the one named)."""
    if run_id is None:
        candidates = reads.candidates(ws, round_, tables.MAD)
        ids = [] if candidates is None else [r for r in candidates.column("run_id").to_pylist() if r]
        if not ids:
            raise EvaluationError(f"round {round_} has no MAD candidates; run `madmine select --round {round_}` first")
        run_id = ids[0]
    record = read_record(ws, run_id)
    if record is None:
        raise EvaluationError(f"no scoring run {run_id!r} in the workspace")
    return record


def scores(ctx: StepContext, round_: int, run: dict) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """(selector -> image_id -> score, higher = more likely a failure; selector -> why it was left out)."""
    ws, config = ctx.ws, ctx.config
    con = duck.connect(ws, cache_metadata=True)
    try:
        present = duck.create_views(con, ws, ("manifest", "bounds"))
        duck.bind_run(con, ws, run["run_id"])
        duck.register_empty(con, "exclusions", pa.schema([("image_id", pa.string()), ("reason", pa.string())]))
        features = learned.image_features(con)
        if "bounds" in present:
            duck.set_variables(con, class_ids=list(range(1, config.num_classes)))
            duck.run_file(con, "groups")
            seen = duck.run_file(con, "selector_scores").to_arrow_table().to_pylist()
        else:
            seen = [{**r, "mad_rank": None} for r in features.select(
                ["image_id", "d_max", "d_mean", "target_entropy", "target_msp"]).to_pylist()]
        pairs = con.sql("SELECT image_id, competitor, d FROM run_pairs WHERE d IS NOT NULL").to_arrow_table().to_pylist()
    finally:
        con.close()

    def column(key, sign=1.0):
        return {r["image_id"]: sign * r[key] for r in seen if r[key] is not None}

    out: dict[str, dict[str, float]] = {"d max": column("d_max"), "d mean": column("d_mean")}
    for competitor in sorted({p["competitor"] for p in pairs}):
        out[f"d {competitor}"] = {p["image_id"]: p["d"] for p in pairs if p["competitor"] == competitor}
    out["entropy"] = column("target_entropy")
    out["max-softmax"] = column("target_msp", -1.0)
    left_out: dict[str, str] = {}
    if "bounds" in present:
        out["mad"] = {r["image_id"]: (NO_GROUP if r["mad_rank"] is None else -float(r["mad_rank"])) + 0.5 * (r["d_max"] or 0.0)
                      for r in seen}
    else:
        left_out["mad"] = "no size bounds (`madmine bounds LABELS_DIR`)"
    try:
        trained = learned.fitted(ws, config, round_)
    except MadmineError as exc:  # too few ratings before round R (round 0 has none): named, not fatal
        left_out["learned"] = left_out["hybrid"] = str(exc).split(": they need")[0]
    else:
        p = dict(zip(features.column("image_id").to_pylist(), trained.score(learned.feature_matrix(features))))
        out["learned"] = p
        if "mad" in out:
            grouped = {r["image_id"] for r in seen if r["mad_rank"] is not None}
            out["hybrid"] = {i: (v if i in grouped else -1.0) for i, v in p.items()}
    out["random"] = {r["image_id"]: random_score(config.evaluate.seed, r["image_id"]) for r in seen}
    for name in [n for n, values in out.items() if not values]:
        left_out[name] = "the run holds no value of it (a maps target gives no entropy or max-softmax)"
        del out[name]
    return out, left_out


def outcomes_from_labels(ctx: StepContext, run: dict, image_ids: list[str]) -> dict[str, Outcome]:
    """The run's target on the labelled images among `image_ids`: per-image mIoU; a label with no valid
    pixel (every pixel 255) marks an image its annotator found out of domain."""
    labels = reads.labels(ctx.ws)
    target = next(m for m in run["models"] if m["role"] == "target")
    refs = {r.key: r for r in model_refs(ctx.config, ctx.ws)}
    ref = refs.get((target["name"], target["version"])) or ModelRef(target["name"], target["version"], "target", None, "run")
    uris = reads.uris(ctx.ws)
    known = [i for i in image_ids if i in labels and i in uris]
    maps = ModelMaps(ctx.config, ctx.ws, ref).maps([(i, uris[i]) for i in known])
    out = {}
    for image_id in known:
        label = reads.load_label(ctx.ws, labels[image_id], ctx.config.num_classes)
        if not (label != 255).any():
            out[image_id] = Outcome(float("nan"), True)
            continue
        out[image_id] = Outcome(metrics.image_miou(resize_nearest(maps[image_id], label.shape), label,
                                                   ctx.config.num_classes), False)
    return out


def _measures(s: np.ndarray, miou: np.ndarray, ood: np.ndarray, fail: np.ndarray, k_m: int, k_n4: int) -> dict:
    inside = ~ood
    si, fi, mi = s[inside], fail[inside], miou[inside]
    finite = np.isfinite(mi)
    order = np.argsort(-s, kind="stable")
    top_m, top_n4 = order[:k_m], order[:k_n4]
    return {
        "auroc": metrics.auroc(si, fi),
        "aupr_error": metrics.average_precision(si, fi),
        "fpr95": metrics.fpr_at_tpr(si, fi, 0.95),
        "spearman": metrics.spearman(si[finite], mi[finite]) if finite.sum() > 1 else float("nan"),
        "pearson": metrics.pearson(si[finite], mi[finite]) if finite.sum() > 1 else float("nan"),
        "precision_at_m": float(fail[top_m].mean()) if top_m.size else float("nan"),
        "precision_at_n4": float(fail[top_n4].mean()) if top_n4.size else float("nan"),
        "ood_at_m": float(ood[top_m].mean()) if top_m.size else float("nan"),
        "ood_at_n4": float(ood[top_n4].mean()) if top_n4.size else float("nan"),
    }


WITH_INTERVALS = ("auroc", "aupr_error", "fpr95", "spearman", "pearson", "precision_at_m", "precision_at_n4")


def judge(round_: int, run: dict, selector_scores: dict[str, dict[str, float]], outcomes: dict[str, Outcome],
          budget_m: int, n4: int, tau: float, corpus: int, resamples: int = 300, seed: int = 0,
          left_out: dict[str, str] | None = None) -> Judged:
    """Every selector on the pool of `outcomes` (image_id -> Outcome), budgets scaled from the corpus to
    the pool; intervals from resampling the pool's images (the same draws for every selector)."""
    ids = sorted(outcomes)
    judged = Judged(round_, run["run_id"], pool=len(ids))
    if not ids:
        return judged
    ood = np.array([outcomes[i].out_of_domain for i in ids])
    miou = np.array([outcomes[i].miou for i in ids], dtype=np.float64)
    fail = ~ood & np.isfinite(miou) & (miou < tau)
    scale = len(ids) / max(corpus, 1)
    k_m, k_n4 = max(1, round(budget_m * scale)), max(1, round(n4 * scale))
    draws = np.random.default_rng(seed).integers(0, len(ids), (resamples, len(ids)))
    base = {"round": round_, "run_id": run["run_id"], "pool": len(ids), "in_domain": int((~ood).sum()),
            "failures": int(fail.sum()), "tau": tau, "k_m": k_m, "k_n4": k_n4}
    for name, values in selector_scores.items():
        s = np.array([values.get(i, np.nan) for i in ids], dtype=np.float64)
        keep = np.isfinite(s)
        if not keep.all():  # an image a selector cannot score (no competitor pair, say) is its least likely pick
            s = np.where(keep, s, np.nanmin(s) - 1.0 if keep.any() else 0.0)
        point = _measures(s, miou, ood, fail, k_m, k_n4)
        spread = {key: [] for key in WITH_INTERVALS}
        for d in draws:
            m = _measures(s[d], miou[d], ood[d], fail[d], k_m, k_n4)
            for key in WITH_INTERVALS:
                spread[key].append(m[key])
        row = {**base, "selector": name, **point}
        for key, values_ in spread.items():
            finite = np.asarray(values_, dtype=np.float64)
            finite = finite[np.isfinite(finite)]
            row[f"{key}_low"] = float(np.percentile(finite, 2.5)) if finite.size else None
            row[f"{key}_high"] = float(np.percentile(finite, 97.5)) if finite.size else None
        judged.rows.append({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()})
    for name, why in (left_out or {}).items():
        judged.rows.append({**base, "selector": name, "note": why})
    return judged


def run(ctx: StepContext, params: SelectorsParams, outcomes: dict[str, Outcome] | None = None) -> Judged:
    """Judge every selector on round R's run and save tables/selectors/round-<R>.parquet. The pool is the
    labelled images of the corpus sample, unless the caller knows the outcomes (the demo: its truth)."""
    run_ = round_run(ctx.ws, params.round, params.run_id)
    tau = ctx.config.evaluate.tau if params.tau is None else params.tau
    selector_scores, left_out = scores(ctx, params.round, run_)
    if outcomes is None:
        sample = tables.SAMPLE.read(ctx.ws)
        if sample is None:
            raise EvaluationError("no corpus sample to judge the selectors on: draw one (`madmine sample --size 500`), "
                                  "label it (`madmine annotate export --set sample`, then import)")
        outcomes = outcomes_from_labels(ctx, run_, sample.column("image_id").to_pylist())
        if not outcomes:
            raise EvaluationError("no image of the corpus sample is labelled yet: `madmine annotate export --set sample`")
    scored = set(next(iter(selector_scores.values())) if selector_scores else ())
    outcomes = {i: o for i, o in outcomes.items() if i in scored}
    mad = reads.candidates(ctx.ws, params.round, tables.MAD)
    budget_m = len(set(mad.column("image_id").to_pylist())) if mad is not None else ctx.config.selection.n4
    judged = judge(params.round, run_, selector_scores, outcomes, budget_m, ctx.config.selection.n4, tau,
                   corpus=len(scored), resamples=params.resamples, seed=ctx.config.evaluate.seed, left_out=left_out)
    tables.SELECTORS.write(ctx.ws, judged.table(), round=params.round)
    return judged
