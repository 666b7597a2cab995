"""The Ray Train worker function of one trial (one learning rate of the grid).

Restores the newest checkpoint when Ray Train restarts the worker group (a killed worker) or
a re-run of the round finds one (a killed driver), then trains epoch after epoch: SGD with
momentum and weight decay, poly decay over all steps, cross-entropy ignoring 255, one batch
of S and one of S(0) per step by default. After each epoch it measures dataset mIoU on T(0)
(one confusion matrix summed over every worker), and with [finetune] choose_by = "validation"
the failures on V (the held-out part of S), and reports a checkpoint.

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
from madmine.steps.train import checkpoints
from madmine.steps.train.dataset import EvalSet, TrainSet
from madmine.steps.train.plan import Plan
from madmine.steps.train.sampling import epoch_batches, poly_lr, steps_per_epoch

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


def set_train_mode(net: nn.Module, freeze_bn: bool) -> None:
    """Train mode; with freeze_bn, batch norm keeps the parent's statistics (batches of 2 are too noisy to estimate them)."""
    net.train()
    if freeze_bn:
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


def evaluate(net: nn.Module, plan: Plan, storage_options: dict, device, rank: int, world: int,
             loaded: LoadedModel | None = None) -> float:
    """Dataset mIoU on T(0): each worker predicts its share, the confusion matrices are summed."""
    c = plan.num_classes
    conf = np.zeros((c, c), dtype=np.int64)
    for label, pred in predictions(net, plan.t0, plan, storage_options, device, rank, world, loaded):
        conf += metrics.confusion(label, pred, c)
    return metrics.dataset_miou(_all_reduce(conf, world))


def validate(net: nn.Module, plan: Plan, storage_options: dict, device, rank: int, world: int,
             loaded: LoadedModel | None = None) -> dict:
    """On V, the held-out part of S: the fraction of failures (per-image mIoU below plan.tau)
    and the mean per-image mIoU: how well the model now does on the kind of image it was
    shown to fail on, but on images it was not trained on."""
    sums = np.zeros(3, dtype=np.float64)  # images, failures, summed per-image mIoU
    for label, pred in predictions(net, plan.v, plan, storage_options, device, rank, world, loaded):
        miou = metrics.image_miou(pred, label, plan.num_classes)
        if miou == miou:  # NaN: no labelled pixel (S has none such: data.check refuses them)
            sums += (1.0, float(miou < plan.tau), miou)
    sums = _all_reduce(sums, world)
    n = max(sums[0], 1.0)
    return {"v_failures": float(sums[1] / n), "v_image_miou": float(sums[2] / n)}


def train_epoch(
    model, net, optimizer, plan: Plan, lr: float, epoch: int, device, rank: int, world: int, dataset,
    loaded: LoadedModel | None = None,
) -> float:
    """One pass over S; returns the mean training loss over every worker's steps.

    A model with a class map is trained on the likelihood of the config's labels: its
    probabilities summed per config class (registry.config_log_probs)."""
    n_s, n_0 = len(plan.s), len(plan.s0)
    primary = n_s if plan.mixing == "alternate" else n_s + n_0
    steps = steps_per_epoch(primary, plan.batch_size, world)
    total_steps = steps * plan.epochs
    batches = epoch_batches(n_s, n_0, plan.batch_size, epoch, rank, world, plan.seed, plan.mixing)
    keyed = [[(i, (plan.seed, epoch, rank, step, slot)) for slot, i in enumerate(b)] for step, b in enumerate(batches)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=keyed, num_workers=plan.loader_workers)
    torch.manual_seed(plan.seed * 100_003 + epoch)
    set_train_mode(net, plan.freeze_bn)
    sums = np.zeros(2, dtype=np.float64)
    for step, (x, y) in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = poly_lr(lr, (epoch - 1) * steps + step, total_steps, plan.poly_power)
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


def _report(metrics_: dict, net, optimizer, state: dict, rank: int, with_checkpoint: bool) -> None:
    if not with_checkpoint:
        ray.train.report(metrics_)
        return
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            model_state = weights_state(net)  # the library model's own state_dict: what a weights file holds
            checkpoints.write(directory, model_state, optimizer.state_dict(), state)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics_, checkpoint=checkpoint, checkpoint_dir_name=checkpoints.dir_name(state["epoch"]))


def _metrics(row: dict, lr: float) -> dict:
    out = {"epoch": row["epoch"], "lr": lr}
    for key in ("train_loss", "val_miou", "v_failures", "v_image_miou"):
        if row.get(key) is not None:
            out[key] = row[key]
    return out


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
    state = {"lr": lr, "epoch": 0, "curve": [], "plan": plan.fingerprint()}
    optimizer_state = None
    restored = ray.train.get_checkpoint()
    if restored:
        with restored.as_directory() as directory:
            model_state, optimizer_state, state = checkpoints.read(directory)
        load_weights(net, model_state)
    model = ray.train.torch.prepare_model(net)
    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=plan.momentum, weight_decay=plan.weight_decay)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)

    if not state["curve"]:
        baseline = evaluate(net, plan, storage_options, device, rank, world, loaded)
        state["curve"].append({"epoch": 0, "train_loss": None, "val_miou": baseline, "resumed": False, "seconds": 0.0,
                               **(validate(net, plan, storage_options, device, rank, world, loaded) if plan.v else {})})
    if state["epoch"] >= plan.epochs:  # finished before a driver restart: report the result again
        ray.train.report(_metrics(state["curve"][-1], lr))
        return

    dataset = TrainSet(plan.s + plan.s0, plan, storage_options)
    resumed = restored is not None
    for epoch in range(state["epoch"] + 1, plan.epochs + 1):
        started = time.perf_counter()
        loss = train_epoch(model, net, optimizer, plan, lr, epoch, device, rank, world, dataset, loaded)
        last = epoch == plan.epochs
        validated = last or epoch % plan.val_every == 0
        val = evaluate(net, plan, storage_options, device, rank, world, loaded) if validated else None
        state["epoch"] = epoch
        row = {
            "epoch": epoch,
            "train_loss": loss,
            "val_miou": val,
            "resumed": resumed,
            "seconds": time.perf_counter() - started,
            **(validate(net, plan, storage_options, device, rank, world, loaded) if validated and plan.v else {}),
        }
        state["curve"].append(row)
        resumed = False
        _report(_metrics(row, lr), net, optimizer, state, rank, last or epoch % plan.checkpoint_every == 0)
