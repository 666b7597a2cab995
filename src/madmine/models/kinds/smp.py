"""segmentation_models_pytorch (`smp = "Unet"`, `encoder = "resnet34"`, `weights = "file.pt"`).

The architecture and encoder are named; the weights file is the smp model's own state_dict
(`torch.save(model.state_dict(), ...)`). Without weights the model is randomly initialised
(the encoder too: madmine never downloads encoder weights in the background). smp models need
inputs divisible by their output stride (32 for most encoders); the wrapper pads the input at
the bottom and right and crops the logits back, so any input_size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from madmine.config import ModelSpec
from madmine.errors import ConfigError
from madmine.models.kinds.base import Kind
from madmine.torchvision_compat import import_torchvision

DEFAULT_ENCODER = "resnet34"


class SMPWrapper(nn.Module):
    trainable = True

    def __init__(self, inner: nn.Module, stride: int):
        super().__init__()
        self.inner = inner
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.stride, (-w) % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        out = self.inner(x)
        if isinstance(out, (tuple, list)):  # aux_params: (mask, label)
            out = out[0]
        return out[..., :h, :w]


class SMPKind(Kind):
    key = "smp"
    label = "segmentation_models_pytorch"
    extra = "smp"
    modules = ("segmentation_models_pytorch",)
    trainable = True
    takes_weights = True

    def require(self, spec: ModelSpec) -> None:
        import_torchvision()  # smp imports timm, which imports torchvision: repair it first
        super().require(spec)

    def source(self, spec: ModelSpec) -> str:
        return f"{spec.smp} / {spec.encoder or DEFAULT_ENCODER}"

    def version_prefix(self, spec: ModelSpec) -> str:
        return f"smp.{spec.smp}.{spec.encoder or DEFAULT_ENCODER}"

    def build(self, spec: ModelSpec, num_outputs: int | None, storage_options: dict | None, state: dict | None = None) -> nn.Module:
        import segmentation_models_pytorch as smp

        encoder = spec.encoder or DEFAULT_ENCODER
        try:
            model = smp.create_model(spec.smp, encoder_name=encoder, encoder_weights=None, classes=num_outputs)
        except KeyError as exc:
            raise ConfigError(f"model {spec.name!r}: smp has no architecture {spec.smp!r} or encoder {encoder!r}: {exc}") from exc
        except Exception as exc:
            raise ConfigError(f"model {spec.name!r}: smp cannot build {spec.smp} with encoder {encoder!r}: {exc}") from exc
        stride = int(getattr(getattr(model, "encoder", None), "output_stride", 32) or 32)
        return SMPWrapper(model, stride)

    def output_classes(self, net: nn.Module) -> int | None:
        head = getattr(net.inner, "segmentation_head", None)
        convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)] if head is not None else []
        return convs[-1].out_channels if convs else None
