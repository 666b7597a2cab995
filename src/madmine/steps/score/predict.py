"""Stage: predict every model on a decoded batch and summarise the maps.

One `Scorer` holds all models on its device, so each image is decoded once. Network maps
are cached as compressed PNGs keyed by model version: a model whose version did not change
is read back instead of run again (competitors across rounds, or any model after a crash).
The output is one row per image with fixed-shape numeric columns, cheap to move between
processes; the driver turns it into the `predictions`, `pairs` and `errors` tables.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from madmine import metrics
from madmine.config import ModelSpec
from madmine.images import ImageError, resize_nearest
from madmine.models.maps import MapsFolder
from madmine.models.registry import build_network, forward_logits
from madmine.steps.score.context import ScoreContext, column
from madmine.steps.score.decode import pixels_column
from madmine.steps.score.map_store import MapStore
from madmine.workspace import Workspace

UNCERTAINTY_STRIDE = 2  # the target's mean entropy and max-softmax over every 2nd pixel (metrics.maps_entropy_msp)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


class Scorer:
    """Callable batch stage: decoded batch -> per-image summaries for every model and pair."""

    def __init__(self, ctx: ScoreContext):
        self.ctx = ctx
        self.device = resolve_device(ctx.scoring.device)
        threads = ctx.scoring.torch_threads or os.cpu_count() or 1
        if self.device == "cpu":
            torch.set_num_threads(threads)
        self.maps = MapStore(Workspace(ctx.workspace_uri, dict(ctx.storage_options)))
        self._networks: dict = {}
        self._maps = {
            m.name: MapsFolder(m.maps, ctx.num_classes, ctx.storage_options) for m in ctx.models if not m.is_network
        }

    # ---- models ------------------------------------------------------------------------
    def _network(self, spec: ModelSpec):
        if spec.name not in self._networks:
            net = build_network(spec, self.ctx.num_classes, self.ctx.storage_options).to(self.device)
            if self.ctx.scoring.channels_last:
                net = net.to(memory_format=torch.channels_last)
            self._networks[spec.name] = net
        return self._networks[spec.name]

    def forward(self, spec: ModelSpec, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 (N, S, S, 3) -> maps uint8 (N, S, S), mean entropy (N,), mean max-softmax (N,).

        Entropy and max-softmax feed the uncertainty baselines, which rank by the target's
        values only, so competitors skip the softmax (NaN): it costs a sizeable fraction of
        a small model's forward pass on a CPU.
        """
        net = self._network(spec)
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        if self.ctx.scoring.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.ctx.scoring.bf16):
            logits = forward_logits(net, x)
        with torch.inference_mode():
            if spec.role == "target":
                maps, entropy, msp = metrics.maps_entropy_msp(logits, stride=UNCERTAINTY_STRIDE)
            else:  # argmax of bf16 logits equals that of their (exact) float copy
                maps = logits.argmax(dim=1).to(torch.uint8)
                entropy = msp = np.full(len(pixels), np.nan)
        return maps.cpu().numpy(), entropy, msp

    # ---- cache ----------------------------------------------------------------------------
    def _cache_read(self, spec: ModelSpec, image_id: str):
        found = self.maps.get(spec.name, self.ctx.versions[spec.name], image_id)
        if found is None:
            return None
        label_map, text = found
        try:
            return label_map, float(text.get("mean_entropy", "nan")), float(text.get("mean_msp", "nan"))
        except ValueError:
            return None  # a damaged cache entry is recomputed

    def _cache_write(self, spec: ModelSpec, image_id: str, label_map: np.ndarray, entropy: float, msp: float) -> None:
        text = {"mean_entropy": repr(entropy), "mean_msp": repr(msp)}
        self.maps.put(spec.name, self.ctx.versions[spec.name], image_id, label_map, text)

    def _network_maps(self, spec: ModelSpec, batch: dict, rows: list[int]) -> dict[int, tuple]:
        """image row -> (map, mean entropy, mean msp, whether the network ran): cache first."""
        use_cache = self.ctx.scoring.cache_maps
        results: dict[int, tuple] = {}
        misses = []
        for i in rows:
            hit = self._cache_read(spec, str(batch["image_id"][i])) if use_cache else None
            if hit is None:
                misses.append(i)
            else:
                results[i] = (*hit, False)
        if misses:
            pixels = batch[pixels_column(spec.input_size)][misses]
            maps, entropy, msp = self.forward(spec, pixels)
            for k, i in enumerate(misses):
                results[i] = (maps[k], float(entropy[k]), float(msp[k]), True)
                if use_cache:
                    self._cache_write(spec, str(batch["image_id"][i]), maps[k], float(entropy[k]), float(msp[k]))
        return results

    # ---- the stage ---------------------------------------------------------------------
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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
            if spec.is_network:
                maps[spec.name] = self._network_maps(spec, batch, rows) if rows else {}
                continue
            loaded = {}
            for i in rows:
                try:
                    loaded[i] = (self._maps[spec.name].load(str(batch["uri"][i])), float("nan"), float("nan"), False)
                except ImageError as exc:
                    fail(i, exc.reason, f"model {spec.name}: {exc.detail}")
            maps[spec.name] = loaded

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

        target = self.ctx.target.name
        for i in range(n):
            if errors[i]:
                continue
            for spec in self.ctx.models:
                label_map, entropy, msp, forwarded = maps[spec.name][i]
                out[column("fw", spec.name)][i] = forwarded
                out[column("cp", spec.name)][i] = metrics.class_pixels(label_map, c)
                out[column("h", spec.name)][i], out[column("w", spec.name)][i] = label_map.shape
                out[column("ent", spec.name)][i] = entropy
                out[column("msp", spec.name)][i] = msp
            target_map = maps[target][i][0]
            for spec in self.ctx.competitors:
                other = resize_nearest(maps[spec.name][i][0], target_map.shape)
                inter, union, d = metrics.pair_summary(target_map, other, c)
                out[column("I", spec.name)][i] = inter
                out[column("U", spec.name)][i] = union
                out[column("d", spec.name)][i] = np.nan if d is None else d
        out["error"] = np.asarray(errors, dtype=object)
        out["stage"] = np.asarray(stages, dtype=object)
        out["detail"] = np.asarray(details, dtype=object)
        return out
