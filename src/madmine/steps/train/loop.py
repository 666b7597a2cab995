"""The Ray Train worker function of one trial (one learning rate of the grid).

Restores the newest checkpoint when Ray Train restarts the worker group (a killed worker) or
a re-run of the round finds one (a killed driver), then trains epoch after epoch with the
plan's recipe (optimizer, schedule, batch norm, mixing, augmentations; recipe.py and
sampling.py), cross-entropy ignoring 255, up to the step budget. Every `val_every` epochs,
and after the last, it measures the model: dataset mIoU on T(0) (one confusion matrix summed
over every worker) and the per-image mIoU of every image of T(0), of V (the held-out part of
S, with choose_by = "validation") and of the S it trains on. The best of those points by the
plan's rule (choice.py) is kept, weights and per-image figures, and travels in every
checkpoint: the round publishes it, not merely the last epoch.

CPU workers talk over gloo and GPU workers over nccl; the code is the same, Ray Train picks
the backend from ScalingConfig(use_gpu=...).
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from madmine import metrics
from madmine.allocator import keep_freed_memory
from madmine.errors import MadmineError
from madmine.models.kinds.base import load_weights, weights_state
from madmine.models.registry import LoadedModel, config_log_probs, forward_logits, load_model, map_ids
from madmine.steps.train import checkpoints, choice
from madmine.steps.train.dataset import EvalSet, TrainSet
from madmine.steps.train.plan import Plan
from madmine.steps.train.recipe import learning_rate
from madmine.steps.train.sampling import epoch_batches

AUX_WEIGHT = 0.5  # torchvision's reference weight for the auxiliary head, when a model has one


def _resize_to(logits: torch.Tensor, shape) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(shape):
        return logits
    return F.interpolate(logits, size=tuple(shape), mode="bilinear", align_corners=False)


def segmentation_loss(out, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over labelled pixels (255 ignored); zero, not NaN, when there is none."""
    heads = out if isinstance(out, dict) else {"out": out}
    valid = int((target != metrics.IGNORE).sum())
    total = None
    for name, weight in (("out", 1.0), ("aux", AUX_WEIGHT)):
        if name not in heads:
            continue
        logits = _resize_to(heads[name], target.shape[-2:])
        loss = F.cross_entropy(logits, target, ignore_index=metrics.IGNORE, reduction="sum") / max(valid, 1)
        loss = weight * loss
        total = loss if total is None else total + loss
    return total


def make_optimizer(name: str, parameters, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """sgd: the paper's (momentum, weight decay); adamw: what the demo's target (and most recent networks) trained with."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def set_train_mode(net: nn.Module, train_batch_norm: bool) -> None:
    """Train mode; without train_batch_norm, batch norm keeps the parent's statistics (its layers in eval
    mode; their affine weights still learn)."""
    net.train()
    if not train_batch_norm:
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _all_reduce(values: np.ndarray, world: int) -> np.ndarray:
    if world == 1:
        return values
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = tensor.to(backend_device)
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def _outputs(out) -> int:
    return int((out["out"] if isinstance(out, dict) else out).shape[1])


def predictions(net: nn.Module, pairs, plan: Plan, storage_options: dict, device, rank: int, world: int,
                loaded: LoadedModel | None = None):
    """(label, prediction) of this worker's share of `pairs`, predicted as scoring sees it: a
    model with a class map has its argmax mapped to config ids."""
    loader = torch.utils.data.DataLoader(
        EvalSet(pairs, plan, storage_options),
        sampler=list(range(rank, len(pairs), world)),
        batch_size=None,
        num_workers=plan.loader_workers,
    )
    net.eval()
    with torch.inference_mode():
        for x, label in loader:
            logits = _resize_to(forward_logits(net, x.to(device)), label.shape)
            lut = loaded.lut(_outputs(logits), logits.device) if loaded is not None else None
            yield np.asarray(label), map_ids(metrics.label_ids(logits), lut)[0].cpu().numpy()


def per_image(net: nn.Module, pairs, plan: Plan, storage_options: dict, device, rank: int, world: int,
              loaded: LoadedModel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(confusion matrix over every pair, per-image mIoU of each pair in order): each worker predicts its
    share, both are summed over the workers (a worker leaves the others' images at zero)."""
    c = plan.num_classes
    conf = np.zeros((c, c), dtype=np.int64)
    mious = np.zeros(len(pairs), dtype=np.float64)
    for index, (label, pred) in zip(range(rank, len(pairs), world),
                                    predictions(net, pairs, plan, storage_options, device, rank, world, loaded)):
        image_conf = metrics.confusion(label, pred, c)
        conf += image_conf
        mious[index] = metrics.miou_from_sums(*metrics.intersection_union(image_conf))
    return _all_reduce(conf, world), _all_reduce(mious, world)


def summary(mious: np.ndarray, tau: float) -> tuple[float, float]:
    """(fraction of failures, mean per-image mIoU) over the images with a labelled pixel."""
    values = mious[np.isfinite(mious)]
    if not values.size:
        return float("nan"), float("nan")
    return float(np.mean(values < tau)), float(values.mean())


def checkpoint_measures(net: nn.Module, plan: Plan, storage_options: dict, device, rank: int, world: int,
                        loaded: LoadedModel | None = None) -> tuple[dict, dict]:
    """(the curve's figures, per-image mIoU by set) of the model as it is: T(0) (dataset mIoU), V
    (failures and mean per-image mIoU), and the S it trains on (the same: does it fit S?)."""
    conf, t0 = per_image(net, plan.t0, plan, storage_options, device, rank, world, loaded)
    figures, images = {"val_miou": metrics.dataset_miou(conf)}, {"t0": t0.tolist()}
    for name, pairs in (("v", plan.v), ("s", plan.s)):
        if pairs:
            mious = per_image(net, pairs, plan, storage_options, device, rank, world, loaded)[1]
            figures[f"{name}_failures"], figures[f"{name}_image_miou"] = summary(mious, plan.tau)
            images[name] = mious.tolist()
    return figures, images


def train_epoch(
    model, net, optimizer, plan: Plan, lr: float, epoch: int, device, rank: int, world: int, dataset,
    loaded: LoadedModel | None = None,
) -> float:
    """One epoch (cut at the step budget in the last); returns the mean training loss over every worker's steps.

    A model with a class map is trained on the likelihood of the config's labels: its
    probabilities summed per config class (registry.config_log_probs)."""
    batches = epoch_batches(len(plan.s), len(plan.s0), plan.batch_size, epoch, rank, world, plan.seed, plan.mixing,
                            plan.s_share)[: plan.steps_in(epoch)]
    keyed = [[(i, (plan.seed, epoch, rank, step, slot)) for slot, i in enumerate(b)] for step, b in enumerate(batches)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=keyed, num_workers=plan.loader_workers)
    torch.manual_seed(plan.seed * 100_003 + epoch)
    set_train_mode(net, plan.train_batch_norm)
    sums = np.zeros(2, dtype=np.float64)
    first = (epoch - 1) * plan.epoch_steps
    for step, (x, y) in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(plan.schedule, lr, first + step, plan.total_steps, plan.poly_power)
        out = model(x.to(device))
        if loaded is not None and loaded.class_map is not None:
            out = config_log_probs(out, loaded.lut(_outputs(out), device), plan.num_classes)
        loss = segmentation_loss(out, y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += (float(loss.detach()), 1.0)
    sums = _all_reduce(sums, world)
    return float(sums[0] / max(sums[1], 1.0))


def _report(metrics_: dict, net, optimizer, state: dict, best_weights: dict | None, rank: int,
            with_checkpoint: bool) -> None:
    if not with_checkpoint:
        ray.train.report(metrics_)
        return
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            model_state = weights_state(net)  # the library model's own state_dict: what a weights file holds
            best = state["best"]
            kept = None if best is None or best["epoch"] == state["epoch"] else best_weights
            checkpoints.write(directory, model_state, optimizer.state_dict(), state, kept)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics_, checkpoint=checkpoint, checkpoint_dir_name=checkpoints.dir_name(state["epoch"]))


def _metrics(row: dict, lr: float) -> dict:
    out = {"epoch": row["epoch"], "lr": lr}
    for key in ("train_loss", "val_miou", "v_failures", "v_image_miou", "s_failures", "s_image_miou"):
        if row.get(key) is not None:
            out[key] = row[key]
    return out


def _copy(weights: dict) -> dict:
    return {k: v.detach().clone() for k, v in weights.items()}


def train_loop(config: dict) -> None:
    """Entry point of every Ray Train worker: config = {"lr", "plan" (Plan.to_dict()), "storage_options"}."""
    keep_freed_memory()
    plan = Plan.from_dict(config["plan"])
    lr = float(config["lr"])
    storage_options = config.get("storage_options") or {}
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(plan.seed)

    loaded = load_model(plan.parent_spec(), plan.classes, storage_options)
    if not loaded.trainable:
        raise MadmineError(f"model {loaded.spec.name!r} ({loaded.kind.label}) cannot be fine-tuned by madmine")
    net = loaded.net
    state = {"lr": lr, "epoch": 0, "curve": [], "plan": plan.fingerprint(), "best": None, "images": {}}
    optimizer_state, best_weights = None, None
    restored = ray.train.get_checkpoint()
    if restored:
        with restored.as_directory() as directory:
            model_state, optimizer_state, state, best_weights = checkpoints.read(directory)
        load_weights(net, model_state)
        if state["best"] is not None and best_weights is None:  # the best was that checkpoint's own epoch
            best_weights = _copy(model_state)
    model = ray.train.torch.prepare_model(net)
    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    optimizer = make_optimizer(plan.optimizer, net.parameters(), lr, plan.momentum, plan.weight_decay)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)

    def measured(row: dict) -> dict:
        figures, images = checkpoint_measures(net, plan, storage_options, device, rank, world, loaded)
        row.update(figures)
        if row["epoch"] == 0:
            state["images"]["parent"] = images
        elif choice.better(row, (state["best"] or {}).get("point"), state["curve"][0], plan.choose_by, plan.max_t0_drop):
            state["best"] = {"epoch": row["epoch"], "point": dict(row)}
            state["images"]["best"] = images
            return _copy(weights_state(net))
        return None

    if not state["curve"]:
        row = {"epoch": 0, "step": 0, "train_loss": None, "resumed": False, "seconds": 0.0}
        measured(row)
        state["curve"].append(row)
    if state["epoch"] >= plan.last_epoch:  # finished before a driver restart: report the result again
        ray.train.report(_metrics(state["curve"][-1], lr))
        return

    dataset = TrainSet(plan.s + plan.s0, plan, storage_options)
    resumed = restored is not None
    for epoch in range(state["epoch"] + 1, plan.last_epoch + 1):
        started = time.perf_counter()
        loss = train_epoch(model, net, optimizer, plan, lr, epoch, device, rank, world, dataset, loaded)
        last = epoch == plan.last_epoch
        row = {"epoch": epoch, "step": (epoch - 1) * plan.epoch_steps + plan.steps_in(epoch), "train_loss": loss,
               "val_miou": None, "resumed": resumed}
        if last or epoch % plan.val_every == 0:
            best_weights = measured(row) or best_weights
        row["seconds"] = time.perf_counter() - started
        state["epoch"] = epoch
        state["curve"].append(row)
        resumed = False
        _report(_metrics(row, lr), net, optimizer, state, best_weights, rank, last or epoch % plan.checkpoint_every == 0)
