"""Learning from the ratings: the predictor behind `select --strategy learned` and `hybrid`.

Every image rated in an earlier round is an example: its features come from the scoring run
its round selected from (sql/features.sql), its label from its mean opinion score
(sql/rated_examples.sql: a failure when MOS <= [selection] failure_mos). A share of the
examples ([selection] learned_heldout, fixed by image_id) is kept out to measure the
predictor's AUROC next to d's and the entropy's own on the same images; the predictor that
selects is then fitted on every example. What was fitted is written to
learned/round-<R>.json, so a selection can be explained afterwards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from madmine import duck, metrics
from madmine.config import Config
from madmine.errors import MadmineError
from madmine.steps.failure_predictor import Predictor, fit, held_out
from madmine.workspace import Workspace

FEATURES = (
    "d_max", "d_mean", "d_min", "target_entropy", "target_msp", "object_fraction", "main_class_fraction",
    "object_classes", "target_competitor_tv", "competitor_tv",
)
MIN_EXAMPLES = 10  # with at least 2 failures and 2 non-failures among those fitted


@dataclass(frozen=True)
class Trained:
    """The fitted predictor and how well it tells failures apart on rated images it never saw."""

    round: int
    rounds: list[int]  # the rounds whose ratings it learned from
    examples: int
    failures: int
    heldout: int
    heldout_failures: int
    auroc: float  # the predictor fitted without the held-out images, on them
    auroc_d: float  # d_max alone (MAD's ranking signal), on the same images
    auroc_entropy: float  # the target's mean entropy alone (the entropy baseline), on the same images
    predictor: Predictor

    def to_dict(self) -> dict:
        out = asdict(self)
        out["predictor"] = self.predictor.to_dict()
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in out.items()}

    def describe(self) -> str:
        def show(v: float) -> str:
            return "n/a" if np.isnan(v) else f"{v:.3f}"

        return (f"learned from {self.examples} rated images of round(s) {self.rounds} ({self.failures} failures); "
                f"AUROC on {self.heldout} held-out rated images ({self.heldout_failures} failures): {show(self.auroc)} "
                f"(d alone {show(self.auroc_d)}, entropy alone {show(self.auroc_entropy)})")

    @classmethod
    def from_dict(cls, data: dict) -> Trained:
        values = {k: (float("nan") if v is None and k.startswith("auroc") else v) for k, v in data.items()}
        return cls(**{**values, "predictor": Predictor.from_dict(data["predictor"])})


def feature_matrix(table: pa.Table) -> np.ndarray:
    """The FEATURES columns of an image_features table as floats (NULL -> NaN)."""
    return np.column_stack([np.asarray(table.column(name).to_pylist(), dtype=np.float64) for name in FEATURES])


def image_features(con) -> pa.Table:
    """sql/features.sql over the run bound to `con` (duck.bind_run), ordered by image_id."""
    duck.run_file(con, "features")
    return con.sql("SELECT * FROM image_features ORDER BY image_id").to_arrow_table()


def _run_features(ws: Workspace, run_id: str) -> dict[str, np.ndarray]:
    con = duck.connect(ws, cache_metadata=True)
    try:
        duck.create_views(con, ws, ("manifest",))
        duck.bind_run(con, ws, run_id)
        table = image_features(con)
    finally:
        con.close()
    return dict(zip(table.column("image_id").to_pylist(), feature_matrix(table)))


def examples(ws: Workspace, config: Config, round_: int) -> pa.Table:
    """Rated images of rounds before `round_`: round, image_id, run_id, mos, failure."""
    con = duck.connect(ws)
    try:
        present = duck.create_views(con, ws, ("ratings", "candidates"))
        if {"ratings", "candidates"} - set(present):
            return pa.table({"round": [], "image_id": [], "run_id": [], "mos": [], "failure": []})
        duck.set_variables(con, round=round_, failure_mos=float(config.selection.failure_mos))
        return duck.run_file(con, "rated_examples").to_arrow_table()
    finally:
        con.close()


def _auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    keep = ~np.isnan(scores)
    return metrics.auroc(scores[keep], positives[keep]) if keep.any() else float("nan")


def train(ws: Workspace, config: Config, round_: int) -> Trained:
    """Fit the predictor on every earlier round's ratings; refuse clearly when they cannot teach it."""
    rated = examples(ws, config, round_).to_pylist()
    by_run: dict[str, dict[str, np.ndarray]] = {}
    rows, labels, ids, rounds = [], [], [], set()
    for r in rated:
        if r["run_id"] not in by_run:
            by_run[r["run_id"]] = _run_features(ws, r["run_id"])
        x = by_run[r["run_id"]].get(r["image_id"])
        if x is not None:
            rows.append(x)
            labels.append(bool(r["failure"]))
            ids.append(f"{r['round']}:{r['image_id']}")
            rounds.add(int(r["round"]))
    y = np.asarray(labels, dtype=bool)
    x = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURES))
    out = held_out(ids, float(config.selection.learned_heldout), config.selection.seed)
    fitted = ~out
    if fitted.sum() < MIN_EXAMPLES or min(y[fitted].sum(), (~y[fitted]).sum()) < 2:
        raise MadmineError(
            f"the learned strategies learn from the ratings of earlier rounds, and rounds before {round_} give "
            f"{len(y)} rated in-domain images ({int(y.sum())} failures with MOS <= {config.selection.failure_mos}): "
            f"they need at least {MIN_EXAMPLES} to fit with 2 failures and 2 non-failures. Rate an earlier round "
            "(`madmine rate serve`), or select with --strategy mad"
        )
    probe = fit(x[fitted], y[fitted], FEATURES)
    heldout_x, heldout_y = x[out], y[out]
    column = {name: k for k, name in enumerate(FEATURES)}
    return Trained(
        round=round_,
        rounds=sorted(rounds),
        examples=int(y.size),
        failures=int(y.sum()),
        heldout=int(out.sum()),
        heldout_failures=int(heldout_y.sum()),
        auroc=_auroc(probe.probability(heldout_x), heldout_y) if out.any() else float("nan"),
        auroc_d=_auroc(heldout_x[:, column["d_max"]], heldout_y),
        auroc_entropy=_auroc(heldout_x[:, column["target_entropy"]], heldout_y),
        predictor=fit(x, y, FEATURES),
    )


def _path(ws: Workspace, round_: int) -> str:
    return ws.path("learned", f"round-{round_}.json")


def save(ws: Workspace, trained: Trained) -> str:
    path = _path(ws, trained.round)
    ws.put_json(path, trained.to_dict())
    return ws.url(path)


def load(ws: Workspace, round_: int) -> Trained | None:
    """The predictor the round's learned or hybrid selection fitted, if one did."""
    path = _path(ws, round_)
    return Trained.from_dict(ws.get_json(path)) if ws.exists(path) else None


def predicted(con, predictor: Predictor) -> pa.Table:
    """image_id, p: the predicted failure probability of every image of the run bound to `con`."""
    table = image_features(con)
    return pa.table({"image_id": table.column("image_id"),
                     "p": pa.array(predictor.probability(feature_matrix(table)), pa.float64())})
