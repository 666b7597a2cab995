"""Learning from the ratings: the predictor behind `select --strategy learned` and `hybrid`.

Every image rated in an earlier round is an example: its features come from the scoring run
its round selected from (sql/features.sql), its labels from its votes (sql/rated_examples.sql):
out of domain when a rater said so, else a failure when its MOS <= [selection] failure_mos.
Two outputs are fitted on the same features: P(failure) on the in-domain examples and
P(out of domain) on all of them; the strategies rank by P(failure) x (1 - P(out of domain)),
so that the label budget is not spent on images nobody can label. A share of the examples
([selection] learned_heldout) is kept out to measure the predictor's AUROC next to d's and the
entropy's own on the same images, drawn per group of near-duplicates (an image and its copies
by perceptual hash, within [selection] phash_distance) so that no copy of a held-out image is
fitted on; the predictor that selects is then fitted on every example.

It is fitted once per round and stored in learned/round-<R>.json with a digest of what it
learned from: `select --strategy learned | hybrid`, `rate select` and `evaluate --selectors`
read that one fit, and it is fitted again only when the ratings it learned from changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from madmine import duck, metrics
from madmine.config import Config
from madmine.errors import MadmineError
from madmine.steps.failure_predictor import Predictor, fit, held_out, near_duplicate_groups
from madmine.workspace import Workspace

FEATURES = (
    "d_max", "d_mean", "d_min", "target_entropy", "target_msp", "object_fraction", "main_class_fraction",
    "object_classes", "target_competitor_tv", "competitor_tv",
)
MIN_EXAMPLES = 10  # with at least 2 failures and 2 non-failures among those fitted
MIN_OOD = 2  # out-of-domain examples (and as many in domain) before P(out of domain) is fitted


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
    predictor: Predictor  # P(failure), fitted on the in-domain examples
    out_of_domain: int = 0  # rated images some rater marked out of domain
    ood: Predictor | None = None  # P(out of domain), fitted on every example (None: too few to learn from)
    auroc_ood: float = float("nan")  # of `ood` on the held-out examples
    digest: str = ""  # what it learned from: a later selection of the round reuses this fit

    def score(self, x: np.ndarray) -> np.ndarray:
        """P(failure) x (1 - P(out of domain)): the chance an image is a failure someone can label."""
        p = self.predictor.probability(x)
        return p if self.ood is None else p * (1.0 - self.ood.probability(x))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["predictor"] = self.predictor.to_dict()
        out["ood"] = None if self.ood is None else self.ood.to_dict()
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in out.items()}

    def describe(self) -> str:
        def show(v: float) -> str:
            return "n/a" if np.isnan(v) else f"{v:.3f}"

        ood = (f"; out of domain: {self.out_of_domain} rated images, " + (
            f"AUROC {show(self.auroc_ood)} on the held-out ones" if self.ood is not None else "too few to learn from"))
        return (f"learned from {self.examples} rated in-domain images of round(s) {self.rounds} ({self.failures} "
                f"failures); AUROC on {self.heldout} held-out rated images ({self.heldout_failures} failures): "
                f"{show(self.auroc)} (d alone {show(self.auroc_d)}, entropy alone {show(self.auroc_entropy)})" + ood)

    @classmethod
    def from_dict(cls, data: dict) -> Trained:
        values = {k: (float("nan") if v is None and k.startswith("auroc") else v) for k, v in data.items()}
        ood = data.get("ood")
        return cls(**{**values, "predictor": Predictor.from_dict(data["predictor"]),
                      "ood": None if ood is None else Predictor.from_dict(ood)})


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
    """Rated images of rounds before `round_`: round, image_id, run_id, mos, failure, out_of_domain, phash."""
    con = duck.connect(ws)
    try:
        present = duck.create_views(con, ws, ("ratings", "candidates", "manifest"))
        if {"ratings", "candidates", "manifest"} - set(present):
            return pa.table({"round": [], "image_id": [], "run_id": [], "mos": [], "failure": [], "out_of_domain": [],
                             "phash": []})
        duck.set_variables(con, round=round_, failure_mos=float(config.selection.failure_mos))
        return duck.run_file(con, "rated_examples").to_arrow_table()
    finally:
        con.close()


def _auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    keep = ~np.isnan(scores)
    return metrics.auroc(scores[keep], positives[keep]) if keep.any() else float("nan")


def _digest(rated: list[dict], config: Config) -> str:
    """What a fit depends on: its examples and the settings that label and split them."""
    keys = [(r["round"], r["image_id"], r["run_id"], r["mos"], r["out_of_domain"]) for r in rated]
    payload = [keys, config.selection.failure_mos, config.selection.learned_heldout, config.selection.seed,
               config.selection.phash_distance, FEATURES]
    return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()[:16]


def train(ws: Workspace, config: Config, round_: int) -> Trained:
    """Fit the predictor on every earlier round's ratings; refuse clearly when they cannot teach it."""
    rated = examples(ws, config, round_).to_pylist()
    by_run: dict[str, dict[str, np.ndarray]] = {}
    rows, kept = [], []
    for r in rated:
        if r["run_id"] not in by_run:
            by_run[r["run_id"]] = _run_features(ws, r["run_id"])
        x = by_run[r["run_id"]].get(r["image_id"])
        if x is not None:
            rows.append(x)
            kept.append(r)
    x = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURES))
    ood = np.asarray([bool(r["out_of_domain"]) for r in kept], dtype=bool)
    y = np.asarray([bool(r["failure"]) for r in kept], dtype=bool)  # meaningful where not ood
    groups = near_duplicate_groups([r["image_id"] for r in kept], [r["phash"] for r in kept],
                                   config.selection.phash_distance)
    out = held_out(groups, float(config.selection.learned_heldout), config.selection.seed)
    inside = ~ood
    fitted = inside & ~out
    if fitted.sum() < MIN_EXAMPLES or min(y[fitted].sum(), (~y[fitted]).sum()) < 2:
        raise MadmineError(
            f"the learned strategies learn from the ratings of earlier rounds, and rounds before {round_} give "
            f"{int(inside.sum())} rated in-domain images ({int(y[inside].sum())} failures with MOS <= "
            f"{config.selection.failure_mos}): they need at least {MIN_EXAMPLES} to fit with 2 failures and 2 "
            "non-failures. Rate an earlier round (`madmine rate serve`), or select with --strategy mad"
        )
    probe = fit(x[fitted], y[fitted], FEATURES)
    test = inside & out
    heldout_x, heldout_y = x[test], y[test]
    column = {name: k for k, name in enumerate(FEATURES)}
    learns_ood = min(ood.sum(), (~ood).sum()) >= MIN_OOD
    auroc_ood = float("nan")
    if learns_ood and min(ood[~out].sum(), (~ood[~out]).sum()) >= MIN_OOD and out.any():
        auroc_ood = _auroc(fit(x[~out], ood[~out], FEATURES).probability(x[out]), ood[out])
    return Trained(
        round=round_,
        rounds=sorted({int(r["round"]) for r in kept}),
        examples=int(inside.sum()),
        failures=int(y[inside].sum()),
        heldout=int(test.sum()),
        heldout_failures=int(heldout_y.sum()),
        auroc=_auroc(probe.probability(heldout_x), heldout_y) if test.any() else float("nan"),
        auroc_d=_auroc(heldout_x[:, column["d_max"]], heldout_y),
        auroc_entropy=_auroc(heldout_x[:, column["target_entropy"]], heldout_y),
        predictor=fit(x[inside], y[inside], FEATURES),
        out_of_domain=int(ood.sum()),
        ood=fit(x, ood, FEATURES) if learns_ood else None,
        auroc_ood=auroc_ood,
        digest=_digest(rated, config),
    )


def fitted(ws: Workspace, config: Config, round_: int) -> Trained:
    """The round's predictor: the stored fit while the ratings it learned from are unchanged, else a new
    fit, stored."""
    stored = load(ws, round_)
    if stored is not None and stored.digest == _digest(examples(ws, config, round_).to_pylist(), config):
        return stored
    trained = train(ws, config, round_)
    save(ws, trained)
    return trained


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


def predicted(con, trained: Trained) -> pa.Table:
    """image_id, p: the chance of a failure someone can label (Trained.score) of every image of the run
    bound to `con`."""
    table = image_features(con)
    return pa.table({"image_id": table.column("image_id"),
                     "p": pa.array(trained.score(feature_matrix(table)), pa.float64())})
