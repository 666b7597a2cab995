"""Which failures disagreement can find: d against the target's true failures, by kind of scene.

MAD ranks images by how much the target and a competitor disagree (d). A failure that every
competitor shares (all of them segment a scene the same wrong way) has a small d and sits below
the passing scenes in that ranking, where no MAD round will reach it. This reads a demo workdir
(after `madmine demo`), takes each round's scoring run, and prints per kind of scene: the target's
in-domain failures, their median d (largest over the competitors) and the share of them ranked
above the median passing typical scene; then the AUROC of d over all in-domain images and over
those of the kinds where the competitors disagree.

    python -m bench.shared_failures [--workdir demo-work]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from madmine import metrics, tables
from madmine.config import load_config
from madmine.workspace import Workspace
from madmine_demo import measure
from madmine_demo.world.datasets import write
from madmine_demo.world.failures import KINDS
from madmine_demo.world.shapes import NAMES
from madmine_demo.world.truth import Truth


def d_max(ws: Workspace, run_id: str) -> dict[str, float]:
    """The largest d over the competitors, per image of one scoring run (no pair: 0)."""
    out: dict[str, float] = {}
    for row in ws.read_parquet(tables.PAIRS.files(ws)).select(["run_id", "image_id", "d"]).to_pylist():
        if row["run_id"] == run_id:
            out[row["image_id"]] = max(out.get(row["image_id"], 0.0), row["d"] or 0.0)
    return out


def report(ws: Workspace, truth: Truth, round_: int) -> None:
    _, ious = measure.round_yields(ws, truth, round_)
    run_id = tables.CANDIDATES.read_file(ws, round=round_, strategy=tables.MAD).column("run_id")[0].as_py()
    d = d_max(ws, run_id)
    ids = [i for i in sorted(ious) if truth.kind(i) != "ood"]
    kind = np.array([truth.kind(i) for i in ids])
    fail = np.array([ious[i] < 0.5 for i in ids])
    score = np.array([d.get(i, 0.0) for i in ids])
    typical_pass = np.median(score[(kind == "typical") & ~fail])
    print(f"round {round_} (run {run_id}): {fail.sum()} in-domain failures of {len(ids)} images; "
          f"median d of the passing typical scenes {typical_pass:.3f}")
    print(f"  {'kind':<13} {'failures':>8} {'median d':>9} {'above the typical median':>25}")
    for k in KINDS:
        chosen = (kind == k) & fail
        if chosen.any():
            print(f"  {k:<13} {chosen.sum():>8} {np.median(score[chosen]):>9.3f} "
                  f"{np.mean(score[chosen] > typical_pass):>25.2f}")
    shared = [k for k in KINDS if ((kind == k) & fail).any() and np.median(score[(kind == k) & fail]) <= typical_pass]
    keep = ~np.isin(kind, shared)
    print(f"  AUROC of d over all in-domain images {metrics.auroc(score, fail):.3f}; without the kinds whose failures "
          f"sit at or below the typical median ({', '.join(shared) or 'none'}) {metrics.auroc(score[keep], fail[keep]):.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("demo-work"))
    args = parser.parse_args(argv)
    world = json.loads((args.workdir / "world.json").read_text())
    wild = args.workdir / "world" / "wild"
    size = json.loads((wild / "done.json").read_text())["size"]
    ws = Workspace.from_config(load_config(args.workdir / "madmine.toml"))
    truth = Truth([write(args.workdir / "world", "wild", size, world["seed"], world["world"])], len(NAMES))
    truth.add_manifest(ws)
    for r in sorted(int(tables.CANDIDATES.keys_of(p)["round"]) for p in tables.CANDIDATES.files(ws, strategy=tables.MAD)):
        report(ws, truth, r)


if __name__ == "__main__":
    main()
