"""torchvision segmentation builders (`arch = "deeplabv3_resnet50"`) and the user's own networks
(`factory = "package.module:function"`): the kinds madmine started with."""

from __future__ import annotations

import importlib
import inspect

from torch import nn

from madmine.config import ModelSpec, is_weights_file
from madmine.errors import ConfigError
from madmine.models.kinds.base import Kind
from madmine.torchvision_compat import import_torchvision


class TorchvisionKind(Kind):
    key = "arch"
    label = "torchvision"
    trainable = True
    takes_weights = True

    def version_prefix(self, spec: ModelSpec) -> str:
        return spec.arch

    def build(self, spec: ModelSpec, num_outputs: int | None, storage_options: dict | None, state: dict | None = None) -> nn.Module:
        tv = import_torchvision()
        kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_outputs}
        if state is not None and any(k.startswith("aux_classifier") for k in state):
            kwargs["aux_loss"] = True
        if spec.weights and not is_weights_file(spec.weights):
            kwargs = {"weights": spec.weights}  # a torchvision weights enum name: downloads where allowed
        return tv.models.get_model(spec.arch, **kwargs)

    def output_classes(self, net: nn.Module) -> int | None:
        head = getattr(net, "classifier", None)
        last = [m for m in head.modules() if isinstance(m, nn.Conv2d)][-1:] if isinstance(head, nn.Module) else []
        return last[0].out_channels if last else None


class FactoryKind(Kind):
    key = "factory"
    label = "factory"
    trainable = True
    takes_weights = True

    def version_prefix(self, spec: ModelSpec) -> str:
        return spec.factory.replace(":", ".")

    def build(self, spec: ModelSpec, num_outputs: int | None, storage_options: dict | None, state: dict | None = None) -> nn.Module:
        module_name, fn_name = spec.factory.split(":")
        try:
            fn = getattr(importlib.import_module(module_name), fn_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"factory {spec.factory!r} cannot be imported: {exc}") from exc
        params = inspect.signature(fn).parameters
        model = fn(num_classes=num_outputs) if "num_classes" in params else fn()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model {spec.name!r}: factory {spec.factory!r} returned {type(model).__name__}, not a torch module")
        return model
