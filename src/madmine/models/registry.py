"""Build a network from a model entry and name its version.

A version identifies the weights, so that cached predictions are reused exactly when the
model has not changed: a hash of the weights file, the torchvision weights enum name, or
the seed of a random initialisation.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import io
import json
import logging
import zlib

import torch
from torch import nn

from madmine.config import Config, ConfigError, ModelSpec, is_weights_file
from madmine.models.maps import MapsFolder
from madmine.torchvision_compat import import_torchvision
from madmine.workspace import filesystem, split_uri

log = logging.getLogger(__name__)


def _read_weights(uri: str, storage_options: dict | None) -> bytes:
    try:
        return filesystem(uri, storage_options).cat_file(split_uri(uri)[1])
    except FileNotFoundError as exc:
        raise ConfigError(f"weights file {uri!r} not found") from exc


def _effective_seed(spec: ModelSpec) -> int:
    """Random weights differ between models of the same arch, and never between runs."""
    return (spec.seed * 1_000_003 + zlib.crc32(spec.name.encode())) % (2**31)


def model_version(spec: ModelSpec, storage_options: dict | None = None) -> str:
    if spec.version:
        return spec.version
    if spec.kind == "maps":
        listing = MapsFolder(spec.maps, 255, storage_options).listing_fingerprint()
        return "maps-" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:12]
    prefix = spec.arch or spec.factory.replace(":", ".")
    if not spec.weights:
        return f"{prefix}-init{_effective_seed(spec)}"
    if is_weights_file(spec.weights):
        return f"{prefix}-" + hashlib.sha256(_read_weights(spec.weights, storage_options)).hexdigest()[:12]
    return f"{prefix}-{spec.weights}"


def _call_factory(factory: str, num_classes: int) -> nn.Module:
    module_name, fn_name = factory.split(":")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"factory {factory!r} cannot be imported: {exc}") from exc
    params = inspect.signature(fn).parameters
    return fn(num_classes=num_classes) if "num_classes" in params else fn()


def build_network(
    spec: ModelSpec, num_classes: int, storage_options: dict | None = None, warn: bool = False
) -> nn.Module:
    """The model in eval mode on the CPU, weights loaded (or seeded random init, with a warning)."""
    state = None
    if spec.weights and is_weights_file(spec.weights):
        data = _read_weights(spec.weights, storage_options)
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise ConfigError(f"model {spec.name!r}: weights {spec.weights!r} are not a torch state_dict: {exc}") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_effective_seed(spec))
        if spec.arch:
            tv = import_torchvision()
            kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
            if state is not None and any(k.startswith("aux_classifier") for k in state):
                kwargs["aux_loss"] = True
            if spec.weights and not is_weights_file(spec.weights):
                kwargs = {"weights": spec.weights}
            model = tv.models.get_model(spec.arch, **kwargs)
        else:
            model = _call_factory(spec.factory, num_classes)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {spec.name!r}: factory {spec.factory!r} returned {type(model).__name__}, not a torch module")
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ConfigError(
                f"model {spec.name!r}: weights {spec.weights!r} do not fit {spec.arch or spec.factory} "
                f"with {num_classes} classes (class-count mismatch or another architecture?): {str(exc)[:300]}"
            ) from exc
    elif not spec.weights and warn:
        log.warning("model %r has no weights: random initialisation (seed %d)", spec.name, _effective_seed(spec))
    return model.eval()


def forward_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if isinstance(out, dict):
        out = out["out"]
    return out


def check_models(config: Config) -> dict[str, str]:
    """Build every model once and check it predicts the configured classes; returns versions.

    Runs before any work starts, so a wrong weights file or class count fails in seconds.
    """
    versions: dict[str, str] = {}
    for spec in config.models:
        versions[spec.name] = model_version(spec, config.storage_options)
        if not spec.is_network:
            if not MapsFolder(spec.maps, config.num_classes, config.storage_options).listing_fingerprint():
                raise ConfigError(f"model {spec.name!r}: maps folder {spec.maps!r} holds no files")
            continue
        model = build_network(spec, config.num_classes, config.storage_options, warn=True)
        with torch.inference_mode():
            logits = forward_logits(model, torch.zeros(1, 3, 64, 64))
        if logits.ndim != 4 or logits.shape[1] != config.num_classes:
            raise ConfigError(
                f"model {spec.name!r} predicts {tuple(logits.shape[1:2])} classes but [classes] names lists "
                f"{config.num_classes}; all models must share the class list"
            )
    return versions
