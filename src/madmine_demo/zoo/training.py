"""The demo's models, trained on the training domain on CPU and cached by what defines them.

A model is (factory, input size, seed, steps, the training set, and any pretraining): the same
give the same weights file name, so a second demo finds them and trains nothing. Training uses
the scoring preprocessing (resize to the square input, ImageNet mean/std), horizontal flips and
nothing else: rotations, scales and colours outside the training domain stay unseen, as they
were for the paper's models trained on PASCAL VOC.

With `pretrain_steps`, a model first learns the broad domain (world.failures.broad_scene: other
categories in any colour, texture, size and angle, among clutter), then its classifier is drawn
afresh and it learns the training domain: the paper's networks started from ImageNet weights,
which is what lets fine-tuning reweight features they already have (bench.finetune_repair, E5).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from madmine.config import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from madmine.models.registry import build_network, forward_logits
from madmine.steps.train.augment import eval_input


@dataclass(frozen=True)
class ZooModel:
    name: str
    role: str
    factory: str
    steps: int
    seed: int
    input_size: int = 64
    batch_size: int = 16
    lr: float = 2e-3
    pretrain_steps: int = 0  # steps on the broad domain first (its classifier then drawn afresh)
    freeze_pretrained: bool = False  # keep the pretrained backbone as it is while learning the training domain


def weights_name(model: ZooModel, data_key: str, broad_key: str = "") -> str:
    fields = asdict(model)
    if not model.pretrain_steps:  # the names of models trained before pretraining was a setting stay the same
        fields.pop("pretrain_steps")
        fields.pop("freeze_pretrained")
    else:
        fields["broad"] = broad_key
    payload = json.dumps({**fields, "data": data_key}, sort_keys=True)
    return f"{model.name}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}.pt"


def load_pairs(images: Path, labels: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (image, label) of a folder pair at the model input: float32 (N, 3, S, S), int64 (N, S, S)."""
    xs, ys = [], []
    for label_path in sorted(labels.glob("*.png")):
        with Image.open(images / f"{label_path.stem}.jpg") as img:
            xs.append(eval_input(img.convert("RGB"), size, IMAGENET_MEAN, IMAGENET_STD))
        with Image.open(label_path) as lab:
            ys.append(np.asarray(lab.resize((size, size), Image.NEAREST), dtype=np.int64))
    return np.stack(xs), np.stack(ys)


def _fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, model: ZooModel, seed: int,
         frozen: nn.Module | None = None) -> list[float]:
    """AdamW with one-cycle, random batches with flips: how every model of the zoo learns a set (a `frozen`
    part keeps its weights and its batch-norm statistics)."""
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=model.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=model.lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (model.batch_size,), generator=gen)
        xb, yb = x[idx], y[idx]
        flip = torch.rand(model.batch_size, generator=gen) < 0.5
        xb[flip], yb[flip] = xb[flip].flip(-1), yb[flip].flip(-1)
        if frozen is not None:
            frozen.eval()
        loss = torch.nn.functional.cross_entropy(forward_logits(net, xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


def new_classifier(net: nn.Module, num_classes: int) -> None:
    """Draw afresh every convolution that outputs the class scores: the pretrained features stay, the classes change."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d) and module.out_channels == num_classes:
            module.reset_parameters()


def _pretrained(net: nn.Module, model: ZooModel, broad: tuple[Path, Path], num_classes: int, cache: Path | None) -> None:
    """The broad domain's weights into `net` (read from `cache` when a run with the same settings wrote it)."""
    if cache is not None and cache.exists():
        net.load_state_dict(torch.load(cache, weights_only=True))
        return
    bx, by = load_pairs(*broad, model.input_size)
    _fit(net, torch.from_numpy(bx), torch.from_numpy(by), model.pretrain_steps, model, model.seed + 1000)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), cache.with_suffix(".tmp"))
        cache.with_suffix(".tmp").replace(cache)


def train(model: ZooModel, images: Path, labels: Path, out: Path, num_classes: int, threads: int = 1,
          broad: tuple[Path, Path] | None = None, pretrained_cache: Path | None = None) -> dict:
    """Train one model (after pretraining on the broad domain's images and labels, when it has pretrain_steps)
    and save its state_dict to `out`; returns what happened."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    torch.manual_seed(model.seed)
    spec = ModelSpec(name=model.name, role=model.role, factory=model.factory, seed=model.seed, input_size=model.input_size)
    net = build_network(spec, num_classes).train()
    if model.pretrain_steps:
        if broad is None:
            raise ValueError(f"{model.name} pretrains on the broad domain: give its images and labels")
        _pretrained(net, model, broad, num_classes, pretrained_cache)
        new_classifier(net, num_classes)
    frozen = getattr(net, "backbone", None) if model.freeze_pretrained and model.pretrain_steps else None
    if frozen is not None:
        for p in frozen.parameters():
            p.requires_grad_(False)
    x, y = load_pairs(images, labels, model.input_size)
    losses = _fit(net, torch.from_numpy(x), torch.from_numpy(y), model.steps, model, model.seed, frozen)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(net.eval().state_dict(), tmp)
    tmp.replace(out)
    return {"name": model.name, "seconds": time.perf_counter() - started, "loss": float(np.mean(losses[-20:]))}


def ensure_trained(models: list[ZooModel], images: Path, labels: Path, folder: Path, num_classes: int, data_key: str,
                   workers: int = 2, report=print, broad: tuple[Path, Path] | None = None,
                   broad_key: str = "") -> dict[str, Path]:
    """name -> weights file; trains (two at a time, one thread each) only the models not cached."""
    paths = {m.name: folder / weights_name(m, data_key, broad_key) for m in models}
    todo = [m for m in models if not paths[m.name].exists()]
    if not todo:
        return paths
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as pool:
        futures = [pool.submit(train, m, images, labels, paths[m.name], num_classes, 1, broad) for m in todo]
        for f in futures:
            r = f.result()
            report(f"  trained {r['name']} in {r['seconds']:.0f} s (final loss {r['loss']:.3f})")
    return paths
