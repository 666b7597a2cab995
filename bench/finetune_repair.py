"""Why round 0's fine-tuning does or does not repair the target, measured in process.

It needs a demo workdir after round 0 (`madmine demo --rounds 1`): the world and the
workspace's round-0 plan (S, S(0), T(0), the parent target). It renders a probe set (the
same number of scenes of every kind, never used to choose anything), splits S into S_train
and a validation part V (a fifth, as `[finetune] choose_by = "validation"` splits it), and fine-tunes the target in this
process with madmine's own training loop (`steps/train/loop.py`) under several recipes fixed
in advance. Every few epochs it measures, per recipe: T(0) mIoU; the failure rate
(per-image mIoU < 0.5, the demo's) on S_train itself, on V and on the probe per kind; and
how far the weights moved. It prints one table per recipe, the updates each recipe gives S
(steps, presentations of every S image, the summed learning rate), and what choosing by
T(0) alone, or by V within a bound on T(0), would pick.

    python -m bench.finetune_repair [--workdir demo-work] [--runs current,lr,bn,scale,s_only,long,adamw,fit,oracle,oracle_fit]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from madmine import metrics
from madmine.models.registry import load_model
from madmine.steps.train.dataset import TrainSet
from madmine.steps.train.loop import evaluate, predictions, train_epoch
from madmine.steps.train.plan import Plan, split_validation
from madmine.steps.train.sampling import steps_per_epoch
from madmine.workspace import Workspace
from madmine_demo.world.datasets import write
from madmine_demo.world.failures import KINDS

TAU = 0.5  # the demo's failure: per-image mIoU below this
FIT = {"optimizer": "adamw", "freeze_bn": False, "scale_range": (1.0, 1.0)}
RECIPES = {  # name -> [(label, plan overrides, lr)], fixed before anything was measured
    "current": [("paper recipe", {}, 0.003), ("paper recipe", {}, 0.01)],
    "lr": [("higher lr", {}, 0.03), ("higher lr", {}, 0.1)],
    "long": [("45 epochs", {"epochs": 45}, 0.01), ("45 epochs", {"epochs": 45}, 0.03)],
    "bn": [("batch norm trained", {"freeze_bn": False}, 0.01), ("batch norm trained", {"freeze_bn": False}, 0.03)],
    "scale": [("no rescaling", {"scale_range": (1.0, 1.0)}, 0.01), ("no rescaling", {"scale_range": (1.0, 1.0)}, 0.03)],
    "s_only": [("S only, no S(0)", {"mixing": "union", "s0": ()}, 0.01)],
    "adamw": [("AdamW, as the target was trained", {"optimizer": "adamw"}, 1e-3),
              ("AdamW, as the target was trained", {"optimizer": "adamw"}, 3e-4)],
    # the target's own optimiser, batch norm trained, no rescaling: the recipe that does fit S
    "fit": [("fits S: AdamW, batch norm trained, no rescaling, S only", FIT | {"mixing": "union", "s0": (), "epochs": 60}, 1e-3),
            ("fits S: AdamW, batch norm trained, no rescaling, with S(0)", FIT | {"epochs": 30}, 1e-3)],
    "oracle_fit": [("oracle S, the recipe that fits", FIT | {"oracle": True, "epochs": 30}, 1e-3)],
    "oracle": [("oracle S (fresh images of S's kinds)", {"oracle": True}, 0.01),
               ("oracle S (fresh images of S's kinds)", {"oracle": True}, 0.03)],
}


def kind_of(world: Path) -> dict[str, str]:
    """image stem -> kind of scene, over every dataset of the world."""
    out = {}
    for index in world.glob("*/index.parquet"):
        t = pq.read_table(index, columns=["stem", "kind"])
        out.update(zip(t.column("stem").to_pylist(), t.column("kind").to_pylist()))
    return out


def per_image_miou(net, pairs, plan: Plan) -> np.ndarray:
    """Per-image mIoU of the network on (image, label) pairs, predicted as fine-tuning validates."""
    return np.asarray([metrics.image_miou(pred, label, plan.num_classes)
                       for label, pred in predictions(net, pairs, plan, {}, "cpu", 0, 1)])


def measure(net, plan: Plan, sets: dict, probe_kinds: list[str], theta0: torch.Tensor) -> dict:
    row = {"t0": evaluate(net, plan, {}, "cpu", 0, 1)}
    for name in ("s_train", "v"):
        m = per_image_miou(net, sets[name], plan)
        row[name] = float(np.mean(m < TAU)) if len(m) else float("nan")
    m = per_image_miou(net, sets["probe"], plan)
    for kind in KINDS:
        sel = [k == kind for k in probe_kinds]
        row[f"probe:{kind}"] = float(np.mean(m[sel] < TAU))
    theta = torch.cat([p.detach().flatten() for p in net.parameters()])
    row["moved"] = float((theta - theta0).norm() / theta0.norm())
    return row


def run_job(job: dict) -> dict:
    """One recipe at one lr: fine-tune from the parent, measuring every `every` epochs."""
    torch.set_num_threads(1)
    plan = Plan.from_dict(job["plan"])
    sets = job["sets"]
    loaded = load_model(plan.parent_spec(), plan.classes)
    net = loaded.net
    torch.manual_seed(plan.seed)
    theta0 = torch.cat([p.detach().flatten() for p in net.parameters()]).clone()
    if job.get("optimizer") == "adamw":  # a diagnosis only: madmine fine-tunes with the paper's SGD
        optimizer = torch.optim.AdamW(net.parameters(), lr=job["lr"], weight_decay=plan.weight_decay)
    else:
        optimizer = torch.optim.SGD(net.parameters(), lr=job["lr"], momentum=plan.momentum, weight_decay=plan.weight_decay)
    dataset = TrainSet(plan.s + plan.s0, plan, {})
    curve = [{"epoch": 0, **measure(net, plan, sets, job["probe_kinds"], theta0)}]
    started = time.perf_counter()
    for epoch in range(1, plan.epochs + 1):
        train_epoch(net, net, optimizer, plan, job["lr"], epoch, "cpu", 0, 1, dataset, loaded)
        if epoch % job["every"] == 0 or epoch == plan.epochs:
            curve.append({"epoch": epoch, **measure(net, plan, sets, job["probe_kinds"], theta0)})
    return {**{k: job[k] for k in ("name", "label", "lr")}, "curve": curve, "seconds": time.perf_counter() - started,
            "steps": steps_per_epoch(len(plan.s) if plan.mixing == "alternate" else len(plan.s) + len(plan.s0),
                                     plan.batch_size, 1) * plan.epochs,
            "epochs": plan.epochs, "s": len(plan.s), "mixing": plan.mixing, "poly": plan.poly_power}


def summed_lr(lr: float, steps: int, power: float) -> float:
    return float(sum(lr * (1 - i / steps) ** power for i in range(steps)))


def print_job(result: dict, kinds_of_s: list[str]) -> None:
    steps, s = result["steps"], result["s"]
    per_image = steps * 8 / s if result["mixing"] == "alternate" else float("nan")
    print(f"\n[{result['name']}] {result['label']}, lr {result['lr']:g}: {result['epochs']} epochs, {steps} steps "
          f"({per_image:.0f} presentations of each S image), summed lr {summed_lr(result['lr'], steps, result['poly']):.2f}, "
          f"{result['seconds']:.0f} s")
    head = f"  {'epoch':>5} {'T(0)':>6} {'S_train':>8} {'V':>6} " + " ".join(f"{k[:9]:>9}" for k in KINDS) + f" {'moved':>6}"
    print(head)
    for row in result["curve"]:
        print(f"  {row['epoch']:>5} {row['t0']:6.3f} {row['s_train']:8.2f} {row['v']:6.2f} "
              + " ".join(f"{row['probe:' + k]:9.2f}" for k in KINDS) + f" {row['moved']:6.3f}")


def choices(results: list[dict], bound: float = 0.01) -> None:
    """What each rule would pick among every measured (recipe, lr, epoch)."""
    points = [(r, row) for r in results for row in r["curve"] if row["epoch"] > 0 and not r["name"].startswith("oracle")]
    if not points:
        return
    parent = results[0]["curve"][0]
    by_t0 = max(points, key=lambda p: (p[1]["t0"], -p[0]["lr"]))
    feasible = [p for p in points if p[1]["t0"] >= parent["t0"] - bound]
    by_v = min(feasible, key=lambda p: (p[1]["v"], p[1]["s_train"], p[0]["lr"], p[1]["epoch"])) if feasible else None
    print(f"\n  parent: T(0) {parent['t0']:.3f}, V failures {parent['v']:.2f}, probe "
          + ", ".join(f"{k} {parent['probe:' + k]:.2f}" for k in KINDS))
    for rule, pick in (("highest T(0)", by_t0), (f"fewest V failures within {bound:g} of the parent's T(0)", by_v)):
        if pick is None:
            print(f"  {rule}: nothing qualifies")
            continue
        r, row = pick
        print(f"  {rule}: [{r['name']}] lr {r['lr']:g} epoch {row['epoch']}: T(0) {row['t0']:.3f}, V {row['v']:.2f}, "
              "probe " + ", ".join(f"{k} {row['probe:' + k]:.2f}" for k in KINDS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("demo-work"))
    parser.add_argument("--runs", default=",".join(RECIPES))
    parser.add_argument("--probe", type=int, default=40, help="probe scenes per kind")
    parser.add_argument("--oracle", type=int, default=400, help="fresh images of S's kinds for the oracle recipe")
    parser.add_argument("--every", type=int, default=5, help="measure every this many epochs")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    workdir = args.workdir.resolve()
    world = workdir / "world"
    ws = Workspace(str(workdir / "workspace"), {})
    saved = ws.get_json(ws.path("finetune", "round-0", "plan.json"))
    plan = Plan.from_dict(saved["plan"] if "plan" in saved else saved)
    plan = dataclasses.replace(plan, s=plan.s + plan.v, v=())  # the whole of S, however the round chose its lr
    seed = json.loads((workdir / "world.json").read_text())["seed"] if (workdir / "world.json").exists() else 0
    kinds = kind_of(world)
    s_kinds = [kinds.get(Path(i).stem, "?") for i, _ in plan.s]
    count = Counter(s_kinds)
    print(f"S (round 0): {len(plan.s)} images: " + ", ".join(f"{k} {n}" for k, n in count.most_common()))
    main_kinds = [k for k, n in count.items() if n >= 0.25 * len(plan.s)]
    probe = write(workdir / "bench-finetune", "probe", args.probe * len(KINDS), seed, "probe")
    probe_pairs = [(str(probe.image(s)), str(probe.label(s))) for s in probe.index().column("stem").to_pylist()]
    probe_kinds = probe.index().column("kind").to_pylist()
    s_train, v = split_validation(plan.s, 0.2, plan.seed)  # as choose_by = "validation" splits S
    print(f"S_train {len(s_train)}, V {len(v)}; T(0) {len(plan.t0)}; probe {len(probe_pairs)} "
          f"({args.probe} of each kind); the kinds that make up most of S (>= 25% each): {', '.join(main_kinds)}")
    sets = {"s_train": s_train, "v": v, "probe": probe_pairs}
    base = dataclasses.replace(plan, s=s_train)
    oracle_pairs = ()
    if {"oracle", "oracle_fit"} & set(args.runs.split(",")):
        oracle = write(workdir / "bench-finetune", "oracle", args.oracle * len(KINDS) // max(len(main_kinds), 1), seed + 1,
                       "probe")
        idx = oracle.index()
        oracle_pairs = tuple((str(oracle.image(s)), str(oracle.label(s)))
                             for s, k in zip(idx.column("stem").to_pylist(), idx.column("kind").to_pylist()) if k in main_kinds)
    jobs = []
    for name in args.runs.split(","):
        for label, overrides, lr in RECIPES[name]:
            overrides = dict(overrides)
            optimizer = overrides.pop("optimizer", "sgd")
            if overrides.pop("oracle", False):
                overrides["s"] = oracle_pairs
            p = dataclasses.replace(base, **overrides)
            jobs.append({"name": name, "label": label, "lr": lr, "plan": p.to_dict(), "sets": sets, "optimizer": optimizer,
                         "probe_kinds": probe_kinds, "every": args.every})
    started = time.perf_counter()
    results = []
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(run_job, job) for job in jobs]):
            results.append(future.result())
            print_job(results[-1], main_kinds)
            sys.stdout.flush()
    results.sort(key=lambda r: (list(RECIPES).index(r["name"]), r["lr"]))
    choices(results)
    print(f"\n{len(jobs)} runs in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
