"""Stage: every model on a decoded batch, the maps summarised per image and per pair.

One `Scorer` holds all models on its device, so each image is decoded once. Maps a caller
already has (a competitor's maps from the map store, when only the target changed) are used
instead of running the network again. Everything per image that torch can do per batch is
done per batch, on the device: the argmax, the target's entropy and max-softmax, the class
pixel counts and the intersections and unions of every pair (one bincount each). Only maps
of their own sizes (precomputed maps folders) go image by image.

The output is one row per image with fixed-shape numeric columns (`columns`), plus the maps
the networks computed (`computed`), which the shard job stores as packs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from madmine import metrics
from madmine.allocator import keep_freed_memory
from madmine.config import ModelSpec
from madmine.images import ImageError, resize_nearest
from madmine.models.device import resolve_device, resolve_precision
from madmine.models.registry import LoadedModel, forward_logits, load_model, map_ids, maps_folder
from madmine.steps.score.context import ScoreContext, column
from madmine.steps.score.decode import pixels_column
from madmine.steps.score.map_store import StoredMap
from madmine.steps.score.timing import Timings


@dataclass
class ScoredBatch:
    columns: dict[str, np.ndarray]
    computed: dict[str, dict[str, StoredMap]] = field(default_factory=dict)  # model -> image_id -> map it ran


class Scorer:
    """Callable batch stage: decoded batch -> per-image summaries for every model and pair."""

    def __init__(self, ctx: ScoreContext):
        self.ctx = ctx
        keep_freed_memory()  # activations reuse freed memory instead of page-faulting fresh maps
        self.device = resolve_device(ctx.scoring.device)
        self.precision = resolve_precision(ctx.scoring.precision, self.device)
        if self.device == "cpu":
            torch.set_num_threads(ctx.scoring.torch_threads or os.cpu_count() or 1)
        self._networks: dict = {}
        self._inputs: dict = {}  # normalised inputs of the batch being scored, per (shape, mean, std)
        self.timings = Timings()
        self._folders = {m.name: maps_folder(m, ctx.classes, ctx.storage_options) for m in ctx.models if not m.is_network}

    # ---- networks ----------------------------------------------------------------------------
    def _network(self, spec: ModelSpec) -> LoadedModel:
        """The model on the device, with its class map (every kind: models/kinds/)."""
        if spec.name not in self._networks:
            loaded = load_model(spec, self.ctx.classes, self.ctx.storage_options)
            loaded.net = loaded.net.to(self.device)
            if self.ctx.scoring.channels_last:
                loaded.net = loaded.net.to(memory_format=torch.channels_last)
            self._networks[spec.name] = loaded
        return self._networks[spec.name]

    def _input(self, spec: ModelSpec, pixels: np.ndarray, rows: tuple | None = None) -> torch.Tensor:
        """uint8 (N, S, S, 3) -> the normalised float batch on the device (pinned, asynchronous on CUDA).

        Within one batch (__call__), models of the same input size and normalisation that run
        on the same `rows` share one copy. The NHWC pixels permuted to NCHW are already
        channels_last."""
        key = (rows, pixels.shape, tuple(spec.mean), tuple(spec.std))
        if rows is not None and key in self._inputs:
            return self._inputs[key]
        x = torch.from_numpy(np.ascontiguousarray(pixels))
        if self.device.startswith("cuda"):
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()
        if not self.ctx.scoring.channels_last:
            x = x.contiguous()
        shift = torch.tensor([255.0 * m for m in spec.mean], device=self.device).view(1, 3, 1, 1)
        scale = torch.tensor([1.0 / (255.0 * s) for s in spec.std], device=self.device).view(1, 3, 1, 1)
        x = x.sub_(shift).mul_(scale)
        if rows is not None:
            self._inputs[key] = x
        return x

    def forward(self, spec: ModelSpec, pixels: np.ndarray, rows: tuple | None = None
                ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """uint8 (N, S, S, 3) -> maps uint8 (N, S, S) on the device, mean entropy (N,), mean max-softmax (N,).

        Maps hold config class ids: a model with a class map has its argmax mapped through the
        map's table on the device (255 where its class is ignored). Entropy and max-softmax feed
        the uncertainty baselines, which rank by the target's values only, so competitors skip
        the softmax (NaN); with a class map they are computed over the config's classes
        (metrics.maps_entropy_msp).
        """
        loaded = self._network(spec)
        net = loaded.net
        with self.timings("to device and normalise"):
            x = self._input(spec, pixels, rows)
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        with self.timings(f"forward {spec.name}"), torch.inference_mode(), \
                torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = forward_logits(net, x)
            self._sync()
        with torch.inference_mode():
            lut = loaded.lut(int(logits.shape[1]), logits.device)
            if spec.role == "target":
                with self.timings("argmax, entropy and max-softmax (target)"):
                    stride = metrics.uncertainty_stride(logits.shape[-1])
                    maps, entropy, msp = metrics.maps_entropy_msp(logits, stride=stride, lut=lut,
                                                                  num_classes=self.ctx.num_classes)
            else:  # argmax of bf16 logits equals that of their (exact) float copy
                with self.timings("argmax (competitors)"):
                    maps = map_ids(metrics.label_ids(logits), lut)
                    self._sync()
                entropy = msp = np.full(len(pixels), np.nan)
        return maps, entropy, msp

    def _sync(self) -> None:
        """On a GPU, wait for queued kernels so the timings say where the time went."""
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    # ---- maps of one model for the batch's good rows -------------------------------------------
    def _model_maps(self, spec: ModelSpec, batch: dict, rows: list[int], cached: dict[str, StoredMap], fail) -> dict:
        """row -> (map tensor on the device, entropy, msp, whether the network ran)."""
        ids = [str(batch["image_id"][i]) for i in rows]
        out: dict[int, tuple] = {}
        if not spec.is_network:
            for i in rows:
                try:
                    m = self._folders[spec.name].load(str(batch["uri"][i]))
                    out[i] = (torch.tensor(m, device=self.device), float("nan"), float("nan"), False)
                except ImageError as exc:
                    fail(i, exc.reason, f"model {spec.name}: {exc.detail}")
            return out
        missing = []
        for i, image_id in zip(rows, ids):
            hit = cached.get(image_id)
            if hit is None:
                missing.append(i)
            else:
                out[i] = (torch.tensor(hit.map, device=self.device), hit.mean_entropy, hit.mean_msp, False)
        if missing:
            maps, entropy, msp = self.forward(spec, batch[pixels_column(spec.input_size)][missing], rows=tuple(missing))
            for k, i in enumerate(missing):
                out[i] = (maps[k], float(entropy[k]), float(msp[k]), True)
        return out

    # ---- the stage ---------------------------------------------------------------------------
    def __call__(self, batch: dict[str, np.ndarray], cached: dict[str, dict[str, StoredMap]] | None = None) -> ScoredBatch:
        cached = cached or {}
        self._inputs = {}
        c = self.ctx.num_classes
        n = len(batch["image_id"])
        errors = [str(e) for e in batch["error"]]
        stages = [str(s) for s in batch["stage"]]
        details = [str(d) for d in batch["detail"]]

        def fail(i: int, reason: str, detail: str) -> None:
            errors[i], stages[i], details[i] = reason, "predict", detail

        maps: dict[str, dict[int, tuple]] = {}
        for spec in self.ctx.models:
            rows = [i for i in range(n) if not errors[i]]
            maps[spec.name] = self._model_maps(spec, batch, rows, cached.get(spec.name, {}), fail) if rows else {}
        good = [i for i in range(n) if not errors[i]]

        out: dict[str, np.ndarray] = {
            "image_id": np.asarray(batch["image_id"], dtype=object),
            "uri": np.asarray(batch["uri"], dtype=object),
            "shard": np.asarray(batch["shard"], dtype=object),
        }
        for spec in self.ctx.models:
            out[column("cp", spec.name)] = np.zeros((n, c), dtype=np.int64)
            out[column("h", spec.name)] = np.zeros(n, dtype=np.int32)
            out[column("w", spec.name)] = np.zeros(n, dtype=np.int32)
            out[column("ent", spec.name)] = np.full(n, np.nan)
            out[column("msp", spec.name)] = np.full(n, np.nan)
            out[column("fw", spec.name)] = np.zeros(n, dtype=bool)
        for spec in self.ctx.competitors:
            out[column("I", spec.name)] = np.zeros((n, c), dtype=np.int64)
            out[column("U", spec.name)] = np.zeros((n, c), dtype=np.int64)
            out[column("d", spec.name)] = np.full(n, np.nan)
        computed: dict[str, dict[str, StoredMap]] = {}
        if good:
            with self.timings("class pixels and pair metrics"), torch.inference_mode():
                self._summarise(out, maps, good, computed, batch)
        out["error"] = np.asarray(errors, dtype=object)
        out["stage"] = np.asarray(stages, dtype=object)
        out["detail"] = np.asarray(details, dtype=object)
        self._inputs = {}
        return ScoredBatch(out, computed)

    def _summarise(self, out: dict, maps: dict, good: list[int], computed: dict, batch: dict) -> None:
        c = self.ctx.num_classes
        index = np.asarray(good)
        stacks, class_pixels = {}, {}
        for spec in self.ctx.models:
            rows = [maps[spec.name][i] for i in good]
            out[column("ent", spec.name)][index] = [r[1] for r in rows]
            out[column("msp", spec.name)][index] = [r[2] for r in rows]
            out[column("fw", spec.name)][index] = [r[3] for r in rows]
            stacks[spec.name] = _stack([r[0] for r in rows])
            ran = [k for k, r in enumerate(rows) if r[3]]
            if ran:
                cpu = (stacks[spec.name][ran] if stacks[spec.name] is not None else _stack([rows[k][0] for k in ran])).cpu().numpy()
                computed[spec.name] = {
                    str(batch["image_id"][good[k]]): StoredMap(cpu[j], rows[k][1], rows[k][2]) for j, k in enumerate(ran)
                }
        target_name = self.ctx.target.name
        target = [maps[target_name][i][0] for i in good]
        target_stack = stacks[target_name]
        for spec in self.ctx.competitors:
            other = [maps[spec.name][i][0] for i in good]
            if target_stack is not None:  # one joint histogram per pair gives I, U and both maps' class pixels
                resized = _resized(other, stacks[spec.name], target_stack.shape[1:])
                joint = metrics.batch_joint_counts(target_stack, resized, c)
                inter, union = (t.cpu().numpy() for t in metrics.joint_pair_summary(joint, c))
                mine, theirs = metrics.joint_class_pixels(joint, c)
                class_pixels.setdefault(target_name, mine)
                if resized is stacks[spec.name]:  # the competitor's maps at their own size
                    class_pixels[spec.name] = theirs
            else:  # target maps of their own sizes: image by image
                pairs = [metrics.pair_summary(t.cpu().numpy(), resize_nearest(o.cpu().numpy(), tuple(t.shape)), c)
                         for t, o in zip(target, other)]
                inter = np.stack([p[0] for p in pairs])
                union = np.stack([p[1] for p in pairs])
            out[column("I", spec.name)][index] = inter
            out[column("U", spec.name)][index] = union
            out[column("d", spec.name)][index] = metrics.batch_discrepancy(inter, union)
        for spec in self.ctx.models:
            stacked = stacks[spec.name]
            if stacked is not None:
                pixels = class_pixels.get(spec.name)
                out[column("cp", spec.name)][index] = (
                    pixels if pixels is not None else metrics.batch_class_pixels(stacked, c)).cpu().numpy()
                out[column("h", spec.name)][index], out[column("w", spec.name)][index] = stacked.shape[1:]
            else:
                for i in good:
                    m = maps[spec.name][i][0]
                    out[column("cp", spec.name)][i] = metrics.class_pixels(m.cpu().numpy(), c)
                    out[column("h", spec.name)][i], out[column("w", spec.name)][i] = m.shape


def _stack(maps: list[torch.Tensor]) -> torch.Tensor | None:
    """One (N, H, W) tensor when every map has the same size, else None."""
    if not maps or any(m.shape != maps[0].shape for m in maps):
        return None
    return torch.stack(maps)


def _resized(maps: list[torch.Tensor], stacked: torch.Tensor | None, shape) -> torch.Tensor:
    """Maps at `shape` (`stacked` itself when it has that size), nearest neighbour as PIL's
    NEAREST (pairs are computed at the target's size)."""
    if stacked is not None:
        if tuple(stacked.shape[1:]) == tuple(shape):
            return stacked
        return F.interpolate(stacked[:, None].float(), size=tuple(shape), mode="nearest-exact")[:, 0].to(torch.uint8)
    device = maps[0].device
    return torch.stack([torch.from_numpy(resize_nearest(m.cpu().numpy(), tuple(shape))).to(device) for m in maps])
