"""The demo's measurements that need the world's truth: how many failures each selection found.

A failure is an image on which the target's per-image mIoU against the true mask is below
0.5 (the report's tau). For a round, every scored image gets its true IoU from the cached
map of the round's target version; then the failure yield is the fraction of failures in
M (MAD's candidates), in S (the n4 of lowest MOS), in the entropy, random, learned and
hybrid selections of the same size, and in a seeded random sample of the corpus of each size.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from madmine import metrics, tables
from madmine.steps.evaluation.selectors import Outcome
from madmine.steps.rating.selection import by_rank
from madmine.steps.score.map_store import MapStore
from madmine.workspace import Workspace
from madmine_demo.strategies import BUILDS_ON_MAD
from madmine_demo.world.truth import Truth

TAU = 0.5


@dataclass
class Yield:
    name: str
    images: int
    failures: int
    in_domain: int  # images not out of domain
    in_domain_failures: int
    kinds: Counter = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.failures / self.images if self.images else float("nan")

    @property
    def in_domain_rate(self) -> float:
        return self.in_domain_failures / self.in_domain if self.in_domain else float("nan")


def true_ious(ws: Workspace, truth: Truth, run: dict) -> dict[str, float]:
    """image_id -> the per-image mIoU of the run's target version on every image the run scored."""
    target = next(m for m in run["models"] if m["role"] == "target")
    preds = tables.PREDICTIONS.read(ws, run_id=run["run_id"])
    ids = sorted({i for i, role in zip(preds.column("image_id").to_pylist(), preds.column("role").to_pylist())
                  if role == "target" and truth.knows(i)})
    store, maps = MapStore(ws), {}
    for path in tables.PREDICTIONS.files(ws, run_id=run["run_id"]):  # one pack per shard of the run
        maps.update(store.read_pack(target["name"], target["version"], tables.PREDICTIONS.keys_of(path)["shard"]) or {})
    return {i: truth.image_iou(i, maps[i].map) for i in ids}


def yield_of(name: str, ids, ious: dict[str, float], truth: Truth) -> Yield:
    ids = [i for i in dict.fromkeys(ids) if i in ious]
    fail = [ious[i] < TAU for i in ids]
    ood = [truth.kind(i) == "ood" for i in ids]
    return Yield(
        name=name,
        images=len(ids),
        failures=int(sum(fail)),
        in_domain=int(sum(not o for o in ood)),
        in_domain_failures=int(sum(f and not o for f, o in zip(fail, ood))),
        kinds=Counter(truth.kind(i) for i in ids),
    )


def random_sample(ids, n: int, seed: int, salt: str) -> list[str]:
    """n ids in an order fixed by (seed, salt, id): the same sample on any machine."""
    key = lambda i: hashlib.sha256(f"{seed}:{salt}:{i}".encode()).hexdigest()  # noqa: E731
    return sorted(ids, key=key)[:n]


def _run(ws: Workspace, run_id: str) -> dict:
    return ws.get_json(ws.path("runs", run_id, "run.json"))


def strategy_ids(ws: Workspace, round_: int, strategy: str, size: int) -> tuple[list[str], list[str], str]:
    """A strategy's first `size` candidates in the order `rate select` takes them, its S, and its run."""
    rows = tables.CANDIDATES.read_file(ws, round=round_, strategy=strategy).to_pylist()
    ordered = by_rank(rows, round_, size, strategy).table.column("image_id").to_pylist()
    chosen = tables.SELECTED.read(ws, round=round_, strategy=strategy)
    s = chosen.column("image_id").to_pylist() if chosen is not None else []
    return ordered, s, rows[0]["run_id"] if rows else ""


def round_yields(ws: Workspace, truth: Truth, round_: int, seed: int = 0) -> tuple[list[Yield], dict[str, float]]:
    """Failure yields of one round's selections (MAD's M and S, and every compared strategy's at MAD's budget,
    each judged against the target that selected it) next to random samples of the corpus of equal size."""
    mad_rows = tables.CANDIDATES.read_file(ws, round=round_, strategy=tables.MAD).to_pylist()
    m = list(dict.fromkeys(r["image_id"] for r in mad_rows))
    s = tables.SELECTED.read_file(ws, round=round_, strategy=tables.MAD).column("image_id").to_pylist()
    mad_run = mad_rows[0]["run_id"]
    ious_of = {mad_run: true_ious(ws, truth, _run(ws, mad_run))}
    others = {}
    for strategy in tables.STRATEGIES[1:]:
        if tables.CANDIDATES.exists(ws, round=round_, strategy=strategy):
            ordered, chosen, run_id = strategy_ids(ws, round_, strategy, len(m))
            if run_id not in ious_of:
                ious_of[run_id] = true_ious(ws, truth, _run(ws, run_id))
            others[strategy] = (ordered, chosen, ious_of[run_id])
    ious = ious_of[mad_run]
    pool = sorted(ious)
    out = [yield_of("corpus (all scored images)", pool, ious, truth)]
    for name, label, ids in (("M", "M: MAD candidates", m), ("S", "S: lowest MOS of M", s)):
        sample = random_sample(pool, len(ids), seed, f"{name}{round_}")
        out += [yield_of(label, ids, ious, truth), yield_of(f"random sample, |{name}| = {len(ids)}", sample, ious, truth)]
        for strategy, (ordered, chosen, own) in others.items():
            out.append(yield_of(f"{strategy} selection, |{name}|", ordered if name == "M" else chosen, own, truth))
    return out, ious


def outcomes(ious: dict[str, float], truth: Truth) -> dict[str, Outcome]:
    """What the world knows of every scored image, as `evaluate --selectors` reads labels: out of domain, or
    the target's per-image mIoU."""
    return {i: Outcome(v, truth.kind(i) == "ood") for i, v in ious.items()}


def failure_rates_by_kind(ious: dict[str, float], truth: Truth) -> dict[str, tuple[int, float]]:
    """kind -> (images, fraction of failures) over the corpus."""
    by: dict[str, list[bool]] = {}
    for i, v in ious.items():
        by.setdefault(truth.kind(i), []).append(v < TAU)
    return {k: (len(v), float(np.mean(v))) for k, v in sorted(by.items())}


@dataclass
class Spread:
    """One compared fine-tuning over its training seeds (seed 0 first)."""

    name: str
    gains: list[float]  # held-out wild dataset mIoU minus the original target's
    t0: list[float]  # dataset mIoU on T(0) held-out
    probe_failures: list[float]  # fraction of probe images with per-image mIoU < TAU
    kind: str = ""  # the kind of scene S of round 0 holds most
    kind_failures: list[float] = field(default_factory=list)  # the probe's failure rate on that kind
    fit: list[float | None] = field(default_factory=list)  # failures on the S it trained on (the fit guard's figure)
    elsewhere: list[tuple[str, float]] = field(default_factory=list)  # the kind not in S that gained most failures, and how many

    @staticmethod
    def mean_sd(values: list[float]) -> tuple[float, float]:
        a = np.asarray(values, dtype=np.float64)
        return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan")


SEED_SUFFIX = "_s"  # mad_r0_s1: mad_r0 fine-tuned again with training seed 1


def seed_variant(name: str, seed: int) -> str:
    return f"{name}{SEED_SUFFIX}{seed}"


def is_seed_variant(name: str) -> bool:
    return SEED_SUFFIX in name


def worst_elsewhere(probe, variant: str, absent: set[str]) -> tuple[str, float]:
    """(kind, change of its failure rate against the variant's parent) for the kind of scene S does not hold
    whose probe failure rate rose most."""
    mine, theirs = probe.failures_by_kind.get(variant, {}), probe.failures_by_kind.get(parent_of(variant), {})
    changes = [(k, mine[k] - theirs[k]) for k in sorted(absent) if k in mine and k in theirs]
    return max(changes, key=lambda c: c[1], default=("", float("nan")))


def seed_spread(heldout, probe, t0, seeds: int, kind: str = "", fits: dict | None = None,
                absent: dict[int, set[str]] | None = None) -> dict[str, Spread]:
    """variant -> its figures under every training seed the arenas hold (variant, variant_s1, ...): the held-out
    gain, T(0), probe failures, those of one kind of scene, the fit on its own S, and of the kinds of scene
    absent[R] (none of MAD's S of rounds <= R holds them) the one that gained most failures."""
    out = {}
    for name in heldout.models:
        if name not in heldout.gain or is_seed_variant(name):
            continue
        names = [name] + [seed_variant(name, k) for k in range(1, seeds) if seed_variant(name, k) in heldout.gain]
        out[name] = Spread(name, [heldout.gain[n][0] for n in names], [t0.miou[n] for n in names],
                           [probe.failures[n] for n in names], kind,
                           [probe.failures_by_kind.get(n, {}).get(kind, float("nan")) for n in names],
                           [(fits or {}).get(n, {}).get("s_failures") for n in names],
                           [worst_elsewhere(probe, n, (absent or {}).get(int(name.rpartition("_r")[2]), set()))
                            for n in names])
    return out


# ---- repair: what each fine-tuned target fixed and broke against its parent -------------------
def parent_of(variant: str) -> str:
    """The arena name of the model a compared fine-tuning started from: round 0's from the original target;
    round R's from its own chain's round R-1, except the learned ones, which build on MAD's round R-1 (as
    `finetune --parent target@mad` does); a seed variant from the same parent as its seed-0 run."""
    strategy, _, r = variant.split(SEED_SUFFIX)[0].rpartition("_r")
    if int(r) == 0:
        return "target"
    return f"{tables.MAD if strategy in BUILDS_ON_MAD else strategy}_r{int(r) - 1}"


def repair_by_kind(arena, variants) -> dict[str, dict[str, metrics.Repair]]:
    """variant -> kind of scene -> its repair against its parent on the arena's images of that kind."""
    out = {}
    for variant in variants:
        parent = parent_of(variant)
        mine, theirs = arena.image_mious.get(variant), arena.image_mious.get(parent)
        if not mine or not theirs:
            continue
        by_kind: dict[str, list[str]] = {}
        for image_id in sorted(set(mine) & set(theirs)):
            by_kind.setdefault(arena.kinds[image_id], []).append(image_id)
        out[variant] = {kind: metrics.repair([theirs[i] for i in ids], [mine[i] for i in ids], TAU)
                        for kind, ids in by_kind.items()}
    return out
