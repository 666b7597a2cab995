"""TorchScript files (`torchscript = "model.pt"`, from torch.jit.trace or torch.jit.script + save).

The file is the model and its weights: its version is the file's hash. It takes the
normalised batch and returns logits (N, K, h, w), a dict holding them under "out" or
"logits", or a tuple whose first item they are; logits smaller than the input are upsampled
bilinearly. A scripted model is run as it is, so it is not fine-tuned (export the fine-tuned
network again instead).
"""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F
from torch import nn

from madmine.config import ModelSpec
from madmine.errors import ConfigError
from madmine.models.kinds.base import Kind, digest, read_file


def logits_of(out, what: str) -> torch.Tensor:
    """The logits tensor inside whatever an exported model returns."""
    if isinstance(out, dict):
        for key in ("out", "logits"):
            if key in out:
                return out[key]
        if len(out) == 1:
            return next(iter(out.values()))
        raise ConfigError(f"{what} returned a dict with keys {sorted(out)}; expected 'out' or 'logits'")
    if isinstance(out, (tuple, list)):
        if not out:
            raise ConfigError(f"{what} returned an empty {type(out).__name__}")
        return logits_of(out[0], what)
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{what} returned {type(out).__name__}, not a tensor of logits")
    return out


def to_input_size(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if logits.ndim == 4 and tuple(logits.shape[-2:]) != tuple(x.shape[-2:]):
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return logits


class ScriptedModel(nn.Module):
    trainable = False

    def __init__(self, inner: nn.Module, name: str):
        super().__init__()
        self.inner = inner
        self.what = f"the TorchScript model of {name!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_input_size(logits_of(self.inner(x), self.what), x)


class TorchScriptKind(Kind):
    key = "torchscript"
    label = "TorchScript"

    def own_digest(self, spec: ModelSpec, storage_options: dict | None) -> str:
        return digest(read_file(spec.torchscript, storage_options, "TorchScript file"))

    def build(self, spec: ModelSpec, num_outputs: int | None, storage_options: dict | None, state: dict | None = None) -> nn.Module:
        data = read_file(spec.torchscript, storage_options, "TorchScript file")
        try:
            scripted = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception as exc:
            raise ConfigError(
                f"model {spec.name!r}: {spec.torchscript!r} is not a TorchScript file (torch.jit.save writes one): "
                f"{str(exc)[:300]}"
            ) from exc
        return ScriptedModel(scripted, spec.name)
