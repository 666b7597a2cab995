"""What fine-tuning on round 0's S can repair, and why not more: experiments E0-E6, measured in process.

It needs a demo workdir after round 0 (`madmine demo --rounds 1`): the world and the workspace's
round-0 plan (S, S(0), T(0), the parent target). It renders a probe (`--probe` scenes of every
kind, never used to choose anything), splits S into S_train and V as `choose_by = "validation"`
does, and fine-tunes the parent in this process with madmine's own training pieces
(steps/train: the plan, its recipe, TrainSet, train_epoch) for a fixed number of steps. After
training it measures T(0) dataset mIoU, failures (per-image mIoU < 0.5) on S_train, on V and on
the probe per kind, what each kind had fixed and broken against the parent, and how far the
weights moved. Every experiment is fixed in advance:

E0  the recipe: the demo's former recipe (SGD, poly, batch norm frozen, rescaling 0.5-2x,
    8 of S + 8 of S(0) per step, 150 steps) against the target's own (AdamW, one-cycle, batch norm
    trained, flips only) at 150 and 300 steps;
E1  images or steps: with the target's own recipe and the same number of steps, S_train against as
    many fresh scenes of S's kinds (same mix of kinds) and against 400; then S_train and the 400
    with four times the steps;
E2  which cue the target follows: training scenes with one change at a time
    (madmine_demo.world.cues), failure rates of every model of the zoo, and for swapped colours
    which class the object pixels are predicted as (the shape's or the colour's);
E3  photometric augmentation (channels permuted, greyscale), without S (S(0) alone) and with S:
    can this network segment by shape at all?
E4  copy-paste of S(0) objects onto training images, without S and with S, against occlusion;
E5  the paper's setting: the target's design pretrained on a broad domain first (other categories in
    any colour, texture, size and angle, among clutter: world.failures.broad_scene), then trained on
    S(0) as the zoo trains it (e5: all of it; e5f: its backbone frozen after pretraining); that
    target as it is, and fine-tuned on S_train with its own recipe;
E6  what keeps the kinds S does not hold: the target's own recipe with batch norm frozen, with a
    quarter of each batch from S instead of half, and both.

    python -m bench.finetune_repair [--workdir demo-work] [--experiments e0,e1,e2,e3,e4,e5,e5f,e6] [--probe 100]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from madmine import metrics
from madmine.config import load_config
from madmine.models.registry import load_model
from madmine.steps.train.dataset import TrainSet
from madmine.steps.train.loop import make_optimizer, predictions, train_epoch
from madmine.steps.train.plan import Plan, split_validation
from madmine.workspace import Workspace
from madmine_demo.world.cues import CUES, render_cue
from madmine_demo.world.datasets import write
from madmine_demo.world.failures import KINDS
from madmine_demo.zoo.training import ZooModel, train

TAU = 0.5  # the demo's failure: per-image mIoU below this
OWN = {"optimizer": "adamw", "schedule": "onecycle", "batch_norm": "train", "scale_range": (1.0, 1.0), "flip": True,
       "mixing": "alternate", "s_share": 0.5, "batch_size": 16, "weight_decay": 1e-4}  # how the target was trained
FORMER = {"optimizer": "sgd", "schedule": "poly", "batch_norm": "freeze", "scale_range": (0.5, 2.0), "flip": True,
          "mixing": "alternate", "s_share": 0.5, "batch_size": 16}  # the demo's recipe before these experiments
EXPERIMENTS = {  # name -> [(label, training set, recipe, steps, lr)], fixed before anything was measured
    "e0": [("former recipe, lr 0.01", "s_train", FORMER, 150, 0.01),
           ("former recipe, lr 0.03", "s_train", FORMER, 150, 0.03),
           ("target's own recipe", "s_train", OWN, 150, 1e-3),
           ("target's own recipe", "s_train", OWN, 300, 1e-3)],
    "e1": [("S_train", "s_train", OWN, 300, 1e-3),
           ("fresh scenes of S's kinds, as many as S_train", "fresh_same", OWN, 300, 1e-3),
           ("400 fresh scenes of S's kinds", "fresh_400", OWN, 300, 1e-3),
           ("S_train, 4x the steps", "s_train", OWN, 1200, 1e-3),
           ("400 fresh scenes, 4x the steps", "fresh_400", OWN, 1200, 1e-3)],
    "e3": [("S(0) alone, photometric", "none", OWN | {"photometric": True}, 300, 1e-3),
           ("S_train + S(0), photometric", "s_train", OWN | {"photometric": True}, 300, 1e-3)],
    "e4": [("S(0) alone, copy-paste 0.5", "none", OWN | {"copy_paste": 0.5}, 300, 1e-3),
           ("S_train + S(0), copy-paste 0.5", "s_train", OWN | {"copy_paste": 0.5}, 300, 1e-3)],
    "e6": [("batch norm frozen", "s_train", OWN | {"batch_norm": "freeze"}, 300, 1e-3),
           ("a quarter of each batch from S", "s_train", OWN | {"s_share": 0.25}, 300, 1e-3),
           ("batch norm frozen, a quarter from S", "s_train", OWN | {"batch_norm": "freeze", "s_share": 0.25}, 300, 1e-3)],
}
PRETRAIN = {"broad_images": 2000, "pretrain_steps": 600}  # E5: the broad domain and its steps
E5 = [("pretrained target, its own recipe", "s_train", OWN, 300, 1e-3)]  # "e5": all of it learns S(0); "e5f": the head
CUE_SCENES = 60  # scenes per cue (E2, and every trained model is measured on them too)


# ---- the sets ------------------------------------------------------------------------------------
def kinds_of(world: Path) -> dict[str, str]:
    """image stem -> kind of scene, over every dataset of the world."""
    out = {}
    for index in world.glob("*/index.parquet"):
        t = pq.read_table(index, columns=["stem", "kind"])
        out.update(zip(t.column("stem").to_pylist(), t.column("kind").to_pylist()))
    return out


def stem(uri: str) -> str:
    return Path(uri).stem


def fresh_like(root: Path, counts: Counter, total: int, seed: int) -> tuple:
    """`total` fresh scenes with the kind mix of `counts` (rounded), rendered from a seed no other set uses."""
    want = {k: round(total * n / sum(counts.values())) for k, n in counts.items() if k in KINDS}
    ds = write(root, f"fresh-{seed}", len(KINDS) * max(want.values()), seed, "probe")
    index = ds.index()
    out = []
    for k, n in want.items():
        stems = [s for s, kind in zip(index.column("stem").to_pylist(), index.column("kind").to_pylist()) if kind == k]
        out += [(str(ds.image(s)), str(ds.label(s))) for s in stems[:n]]
    return tuple(out)


def cue_sets(root: Path, n: int, seed: int) -> dict[str, tuple]:
    """cue -> (image, label) pairs on disk; the painted-colour maps as .npy next to the labels."""
    out = {}
    for cue in CUES:
        folder = root / "cues" / cue
        folder.mkdir(parents=True, exist_ok=True)
        pairs = []
        for i in range(n):
            image, label, painted = render_cue(seed, i, cue)
            paths = folder / f"{i:04d}.png", folder / f"{i:04d}-label.png", folder / f"{i:04d}-painted.npy"
            if not paths[2].exists():
                Image.fromarray(image).save(paths[0])
                Image.fromarray(label).save(paths[1])
                np.save(paths[2], painted)
            pairs.append((str(paths[0]), str(paths[1])))
        out[cue] = tuple(pairs)
    return out


# ---- measuring -----------------------------------------------------------------------------------
def measure(net, plan: Plan, sets: dict, probe_kinds: list[str], theta0: torch.Tensor) -> dict:
    """T(0) mIoU, per-image mIoU of every set, failures per probe kind, colour-following on swapped colours."""
    out = {"images": {}}
    conf = np.zeros((plan.num_classes,) * 2, np.int64)
    for label, pred in predictions(net, plan.t0, plan, {}, "cpu", 0, 1):
        conf += metrics.confusion(label, pred, plan.num_classes)
    out["t0"] = metrics.dataset_miou(conf)
    for name, pairs in sets.items():
        follow = np.zeros(3)  # object pixels predicted as their shape's class, their colour's class, background
        mious = []
        for (label, pred), (image, label_uri) in zip(predictions(net, pairs, plan, {}, "cpu", 0, 1), pairs):
            mious.append(metrics.image_miou(pred, label, plan.num_classes))
            if name == "cue:colour_swap":
                painted = np.load(label_uri.replace("-label.png", "-painted.npy"))
                swapped = (label > 0) & (label != 255) & (painted != label)
                follow += ((pred == label)[swapped].sum(), (pred == painted)[swapped].sum(), (pred == 0)[swapped].sum())
        out["images"][name] = mious
        if name == "cue:colour_swap":
            out["colour_follow"] = (follow / max(follow.sum(), 1.0)).tolist()
    theta = torch.cat([p.detach().flatten() for p in net.parameters()])
    out["moved"] = float((theta - theta0).norm() / theta0.norm())
    out["probe_kinds"] = probe_kinds
    return out


def run_job(job: dict) -> dict:
    """One training run from the parent (or none: the parent itself), measured at the end."""
    torch.set_num_threads(job.get("threads", 1))
    plan = Plan.from_dict(job["plan"])
    loaded = load_model(plan.parent_spec(), plan.classes)
    net = loaded.net
    torch.manual_seed(plan.seed)
    theta0 = torch.cat([p.detach().flatten() for p in net.parameters()]).clone()
    started = time.perf_counter()
    if job["train"]:
        optimizer = make_optimizer(plan.optimizer, net.parameters(), job["lr"], plan.momentum, plan.weight_decay)
        dataset = TrainSet(plan.s + plan.s0, plan, {})
        for epoch in range(1, plan.last_epoch + 1):
            train_epoch(net, net, optimizer, plan, job["lr"], epoch, "cpu", 0, 1, dataset, loaded)
    seconds = time.perf_counter() - started
    result = measure(net, plan, job["sets"], job["probe_kinds"], theta0)
    return {**{k: job[k] for k in ("experiment", "label", "lr", "set_name")}, **result, "seconds": seconds,
            "steps": plan.total_steps if job["train"] else 0, "plan": plan.describe() if job["train"] else "",
            "n_train": len(plan.s)}


# ---- printing -------------------------------------------------------------------------------------
def rate(values) -> float:
    a = np.asarray(values, np.float64)
    a = a[np.isfinite(a)]
    return float(np.mean(a < TAU)) if a.size else float("nan")


def by_kind(result: dict, kind: str) -> np.ndarray:
    return np.asarray([v for v, k in zip(result["images"]["probe"], result["probe_kinds"]) if k == kind])


def pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.0f}%"


def row(result: dict, parent: dict, main_kinds: list[str]) -> str:
    """One markdown row: training set, steps, fit, V, the probe per kind with fixed/broken of the main kinds, T(0)."""
    untrained = "the parent (round 0's target)" if result["label"] == "parent" else result["label"]
    cells = [f"{result['label']} (lr {result['lr']:g})" if result["steps"] else untrained,
             str(result["steps"] or "-"), pct(rate(result["images"]["s_train"])), pct(rate(result["images"]["v"]))]
    for kind in KINDS:
        cell = pct(rate(by_kind(result, kind)))
        if result["steps"] and kind in main_kinds:
            r = metrics.repair(by_kind(parent, kind), by_kind(result, kind), TAU)
            cell += f" (fixed {r.fixed}/{r.failures}, broke {r.broke}/{r.passing})"
        cells.append(cell)
    cells += [f"{100 * result['t0']:.1f}", f"{100 * result['moved']:.0f}%" if result["steps"] else "-"]
    return "| " + " | ".join(cells) + " |"


def header() -> str:
    cols = ["run", "steps", "S_train fails", "V fails", *(f"probe: {k}" for k in KINDS), "T(0) mIoU", "weights moved"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def cue_table(results: list[dict]) -> str:
    cols = ["model", *CUES, "colour_swap object pixels predicted as: the shape's class / the colour's class / background"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        share = r.get("colour_follow", [float("nan")] * 3)
        lines.append("| " + " | ".join([r["label"], *(pct(rate(r["images"][f"cue:{c}"])) for c in CUES),
                                        " / ".join(f"{100 * v:.0f}%" for v in share)]) + " |")
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("demo-work"))
    parser.add_argument("--experiments", default="e0,e1,e2,e3,e4,e5,e5f,e6")
    parser.add_argument("--probe", type=int, default=100, help="probe scenes per kind")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    wanted = args.experiments.split(",")

    workdir = args.workdir.resolve()
    world, out = workdir / "world", workdir / "bench-finetune"
    ws = Workspace(str(workdir / "workspace"), {})
    saved = ws.get_json(ws.path("finetune", "round-0-mad", "plan.json"))
    plan = Plan.from_dict(saved["plan"])
    seed = json.loads((workdir / "world.json").read_text())["seed"]
    s_all = plan.s + plan.v  # the whole of S, however the round chose its checkpoint
    kinds = kinds_of(world)
    s_train, v = split_validation(s_all, 0.2, plan.seed)  # as choose_by = "validation" splits S
    count = Counter(kinds.get(stem(i), "?") for i, _ in s_train)
    main_kinds = [k for k, n in count.most_common() if n >= 0.25 * len(s_train)]
    probe = write(out, "probe", args.probe * len(KINDS), seed, "probe")
    probe_pairs = tuple((str(probe.image(s)), str(probe.label(s))) for s in probe.index().column("stem").to_pylist())
    probe_kinds = probe.index().column("kind").to_pylist()
    print(f"S (round 0): {len(s_all)} images; S_train {len(s_train)}: "
          + ", ".join(f"{k} {n}" for k, n in count.most_common()) + f"; V {len(v)}; T(0) {len(plan.t0)}; "
          f"S(0) {len(plan.s0)}; probe {len(probe_pairs)} ({args.probe} of each kind); S's main kinds: {', '.join(main_kinds)}")
    sets = {"s_train": s_train, "v": v, "probe": probe_pairs,
            **{f"cue:{c}": p for c, p in cue_sets(out, CUE_SCENES, seed + 7).items()}}
    train_sets = {"s_train": s_train, "none": ()}
    if "e1" in wanted:
        train_sets["fresh_same"] = fresh_like(out, count, len(s_train), seed + 11)
        train_sets["fresh_400"] = fresh_like(out, count, 400, seed + 12)
    base = dataclasses.replace(plan, s=s_train, v=v, steps=0)

    jobs = [{"experiment": "parent", "label": "parent", "lr": 0.0, "set_name": "-", "train": False, "plan": base.to_dict(),
             "sets": sets, "probe_kinds": probe_kinds}]
    for name in ("e5", "e5f"):
        if name not in wanted:
            continue
        pretrained = pretrained_target(workdir, out, base, seed, frozen=name == "e5f")
        jobs.append({**jobs[0], "experiment": name, "label": "pretrained target (the parent)",
                     "plan": dataclasses.replace(base, parent=pretrained).to_dict()})
        base_e5 = dataclasses.replace(base, parent=pretrained)
        for label, set_name, recipe, steps, lr in E5:
            p = dataclasses.replace(base_e5, s=train_sets[set_name], steps=steps, lr_grid=(lr,), **recipe)
            jobs.append({"experiment": name, "label": label, "lr": lr, "set_name": set_name, "train": True,
                         "plan": p.to_dict(), "sets": sets, "probe_kinds": probe_kinds})
    for name in wanted:
        for label, set_name, recipe, steps, lr in EXPERIMENTS.get(name, []):
            recipe = recipe | ({"mixing": "union"} if set_name == "none" else {})  # S(0) alone: one pool
            p = dataclasses.replace(base, s=train_sets[set_name], steps=steps, lr_grid=(lr,), **recipe)
            jobs.append({"experiment": name, "label": label, "lr": lr, "set_name": set_name, "train": True,
                         "plan": p.to_dict(), "sets": sets, "probe_kinds": probe_kinds})
    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        results = list(pool.map(run_job, jobs))
    parent = results[0]
    for r in results:
        print(f"\n[{r['experiment']}] {r['label']}, lr {r['lr']:g}, trained on {r['set_name']} ({r['n_train']} images): "
              f"{r['steps']} steps in {r['seconds']:.0f} s. {r['plan']}")
    for name in ["parent", *wanted]:
        mine = [r for r in results if r["experiment"] == name]
        if name == "e2":
            zoo = zoo_results(workdir, base, sets, probe_kinds)
            print("\nE2: failure rate (%) on training scenes with one cue changed (" f"{CUE_SCENES} scenes each)")
            print(cue_table([parent | {"label": "target (round 0's parent)"}, *zoo]))
            continue
        if not mine or name == "parent":
            continue
        own_parent = mine[0] if name.startswith("e5") else parent  # E5's runs start from the pretrained target
        print(f"\n{name.upper()}: after training (failures: per-image mIoU < {TAU}; fixed/broke against the parent)")
        print(header())
        for r in ([parent] if name.startswith("e5") else []) + [own_parent] + [r for r in mine if r is not own_parent]:
            print(row(r, own_parent if r is not parent else parent, main_kinds))
        print("\nthe same runs on the cue scenes (E2's sets):")
        print(cue_table([parent | {"label": "parent"}, *({**r, "label": f"{r['label']} ({r['steps']} steps)"} for r in mine)]))
    print(f"\n{len(jobs)} runs in {time.perf_counter() - started:.0f} s")


def pretrained_target(workdir: Path, out: Path, base: Plan, seed: int, frozen: bool = False) -> dict:
    """E5's parent: the target's design pretrained on the broad domain, then trained on S(0) as the zoo trains
    the target (with `frozen`, only what follows its backbone learns S(0)); cached in the bench's folder.
    Returns its model entry (plan.parent) with those weights."""
    broad = write(out, "broad", PRETRAIN["broad_images"], seed, "broad")
    spec = base.parent_spec()
    model = ZooModel("target", "target", spec.factory, 300, seed, spec.input_size,
                     pretrain_steps=PRETRAIN["pretrain_steps"], freeze_pretrained=frozen)
    weights = out / "zoo" / f"target-pretrained-{PRETRAIN['pretrain_steps']}{'-frozen' if frozen else ''}.pt"
    if not weights.exists():
        world = workdir / "world" / "train"
        report = train(model, world / "images", world / "labels", weights, base.num_classes, threads=2,
                       broad=(broad.images, broad.labels),
                       pretrained_cache=out / "zoo" / f"target-broad-{PRETRAIN['pretrain_steps']}.pt")
        print(f"E5: pretrained the target {PRETRAIN['pretrain_steps']} steps on {PRETRAIN['broad_images']} broad "
              f"scenes, then 300 on S(0), in {report['seconds']:.0f} s")
    return {**dataclasses.asdict(spec), "weights": str(weights)}


def zoo_results(workdir: Path, base: Plan, sets: dict, probe_kinds: list[str]) -> list[dict]:
    """The competitors of the demo's zoo on the cue scenes (E2): does any follow the shape?"""
    config = load_config(workdir / "madmine.toml")
    out = []
    for spec in config.competitors:
        p = dataclasses.replace(base, parent={**dataclasses.asdict(spec)})
        net = load_model(p.parent_spec(), p.classes).net
        theta0 = torch.cat([q.detach().flatten() for q in net.parameters()]).clone()
        cue_only = {k: v for k, v in sets.items() if k.startswith("cue:")}
        r = measure(net, p, cue_only, probe_kinds, theta0)
        out.append({**r, "label": spec.name})
    return out


if __name__ == "__main__":
    sys.exit(main())
