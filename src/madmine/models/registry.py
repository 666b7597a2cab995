"""Build a model from a config entry, map its classes, and name its version.

Every kind (models/kinds/) builds a torch module that takes the normalised batch and returns
logits over the model's own classes. `load_model` adds what scoring, evaluation and
fine-tuning need on top: the class map's lookup table (model class id -> config id or 255)
and the kind's facts (trainable, class names). `build_network` and `forward_logits` are the
plain module and its logits, for code that needs no mapping.

A version identifies what decides the maps, so that cached predictions are reused exactly
when the model has not changed: a hash of the weights file (or of the TorchScript or ONNX
file, or of the Hugging Face checkpoint folder), the torchvision weights enum name, or the
seed of a random initialisation; with a class map, `-cm<hash of the map>` follows, so a new
mapping never reuses maps made with the old one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from madmine.config import Config, ModelSpec, is_weights_file
from madmine.errors import ConfigError
from madmine.models.classmap import ClassMap, ClassMapError, csv_size, load_class_map
from madmine.models.device import resolve_device, resolve_precision
from madmine.models.kinds import kind_of
from madmine.models.kinds.base import effective_seed, load_state_dict_bytes, load_weights, read_file
from madmine.models.maps import MapsFolder
from madmine.models.resolve import resolve

log = logging.getLogger(__name__)

PROBE_SIZE = 64  # check_models runs every network once on a blank batch of this side


def class_map_of(spec: ModelSpec, classes, storage_options: dict | None = None) -> ClassMap | None:
    """The model's class map over the config's class names (None: it predicts the config's classes)."""
    if spec.class_map is None:
        return None
    try:
        return load_class_map(spec.class_map, tuple(classes), storage_options)
    except ConfigError as exc:
        raise ConfigError(f"model {spec.name!r}: {exc}") from None


def model_version(spec: ModelSpec, storage_options: dict | None = None, classes=None) -> str:
    """The version of a model entry; `classes` (the config's names) are needed only with a class map."""
    if spec.version:
        return spec.version
    if spec.kind == "maps":
        listing = MapsFolder(spec.maps, 255, storage_options).listing_fingerprint()
        base = "maps-" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:12]
    else:
        base = kind_of(spec).version(spec, storage_options)
    return base + class_map_suffix(spec, classes, storage_options)


def class_map_suffix(spec: ModelSpec, classes, storage_options: dict | None = None) -> str:
    if spec.class_map is None:
        return ""
    if classes is None:
        raise ConfigError(f"model {spec.name!r} has a class_map: its version needs the config's class names")
    return "-cm" + class_map_of(spec, classes, storage_options).digest()


def version_from_weights(spec: ModelSpec, weights: bytes, classes=None) -> str:
    """model_version of the entry with a weights file of these bytes, without writing or reading it."""
    return f"{kind_of(spec).version_prefix(spec)}-" + hashlib.sha256(weights).hexdigest()[:12] + class_map_suffix(spec, classes)


def model_class_count(spec: ModelSpec, num_classes: int, storage_options: dict | None = None) -> int | None:
    """How many classes to build the model with: the config's, or its own with a class map (None: the
    checkpoint decides)."""
    if spec.class_map is None:
        return spec.classes or num_classes
    if spec.classes is not None:
        return spec.classes
    if isinstance(spec.class_map, str):  # a CSV lists every model class
        return csv_size(spec.class_map, storage_options)
    return None


def _build(spec: ModelSpec, num_classes: int, storage_options: dict | None, warn: bool) -> nn.Module:
    kind = kind_of(spec)
    kind.require(spec)
    num_outputs = None if kind.intrinsic_classes and spec.classes is None else model_class_count(spec, num_classes, storage_options)
    state = None
    if spec.weights and is_weights_file(spec.weights):
        state = load_state_dict_bytes(spec, read_file(spec.weights, storage_options))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(effective_seed(spec))
        model = kind.build(spec, num_outputs, storage_options, state)
    if state is not None:
        try:
            load_weights(model, state)
        except RuntimeError as exc:
            what = spec.arch or spec.factory or kind.source(spec)
            raise ConfigError(
                f"model {spec.name!r}: weights {spec.weights!r} do not fit {what} "
                f"with {num_outputs} classes (class-count mismatch or another architecture?): {str(exc)[:300]}"
            ) from exc
    elif not spec.weights and warn and kind.takes_weights and kind.key in ("arch", "factory", "smp"):
        log.warning("model %r has no weights: random initialisation (seed %d)", spec.name, effective_seed(spec))
    return model.eval()


def build_network(
    spec: ModelSpec, num_classes: int, storage_options: dict | None = None, warn: bool = False
) -> nn.Module:
    """The model in eval mode on the CPU, weights loaded (or seeded random init, with a warning)."""
    return _build(spec, num_classes, storage_options, warn)


def forward_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if isinstance(out, dict):
        out = out["out"]
    return out


@dataclass
class LoadedModel:
    """A built network with what scoring, evaluation and fine-tuning apply around it."""

    spec: ModelSpec
    net: nn.Module
    classes: tuple[str, ...]
    class_map: ClassMap | None = None
    _luts: dict = field(default_factory=dict)

    @property
    def kind(self):
        return kind_of(self.spec)

    @property
    def trainable(self) -> bool:
        return self.kind.can_train(self.net)

    @property
    def labels(self) -> tuple[str, ...] | None:
        """The model's own class names, where it names them (a Hugging Face id2label, a CSV's name column)."""
        own = self.kind.labels(self.net)
        if own is None and self.class_map is not None:
            return self.class_map.names
        return own

    def lut_array(self, num_outputs: int) -> np.ndarray | None:
        """uint8 (num_outputs,): model class -> config id or 255; None without a class map.

        Raises ConfigError when the model's class count does not fit its map (or, without a
        map, is not the config's)."""
        if self.class_map is None:
            if num_outputs != len(self.classes):
                raise ConfigError(
                    f"model {self.spec.name!r} predicts {num_outputs} classes but [classes] names lists "
                    f"{len(self.classes)}; all models must share the class list, or map the model's classes with class_map"
                )
            return None
        try:
            return self.class_map.lut(num_outputs, self.kind.labels(self.net))
        except ClassMapError as exc:
            raise ConfigError(f"model {self.spec.name!r}: {exc}") from None

    def lut(self, num_outputs: int, device) -> torch.Tensor | None:
        """The lookup table as a long tensor on a device (cached)."""
        key = (num_outputs, str(device))
        if key not in self._luts:
            table = self.lut_array(num_outputs)
            self._luts[key] = None if table is None else torch.from_numpy(table.astype(np.int64)).to(device)
        return self._luts[key]


def load_model(spec: ModelSpec, classes, storage_options: dict | None = None, warn: bool = False) -> LoadedModel:
    """Build a network entry and resolve its class map (checked against the model when it first runs)."""
    classes = tuple(classes)
    cmap = class_map_of(spec, classes, storage_options)
    net = _build(spec, len(classes), storage_options, warn)
    return LoadedModel(spec, net, classes, cmap)


def map_ids(ids: torch.Tensor, lut: torch.Tensor | None) -> torch.Tensor:
    """Model class ids (N, H, W) -> config ids as uint8 (255: ignore)."""
    if lut is None:
        return ids.to(torch.uint8)
    return lut[ids.long()].to(torch.uint8)


def config_log_probs(out, lut: torch.Tensor | None, num_classes: int):
    """Logits over the model's classes -> log-probabilities over the config's classes plus one
    "ignored" bucket (N, c + 1, H, W): each config class gets the summed probability of the model
    classes mapped to it. Cross-entropy on these is the likelihood of the labels under the mapped
    model (fine-tuning a model with a class map); dicts (torchvision heads) are mapped per head."""
    if lut is None:
        return out
    if isinstance(out, dict):
        return {k: config_log_probs(v, lut, num_classes) for k, v in out.items()}
    buckets = torch.where(lut == 255, torch.full_like(lut, num_classes), lut)
    log_p = torch.log_softmax(out.float(), dim=1)
    top = log_p.amax(dim=1, keepdim=True)
    p = torch.exp(log_p - top)
    shape = (p.shape[0], num_classes + 1, *p.shape[2:])
    merged = torch.zeros(shape, dtype=p.dtype, device=p.device).index_add_(1, buckets, p)
    return torch.log(merged.clamp_min(torch.finfo(p.dtype).tiny)) + top


def maps_folder(spec: ModelSpec, classes, storage_options: dict | None = None, **limits) -> MapsFolder:
    """The maps folder of a maps entry, mapping its PNGs' class ids through its class map, if any."""
    cmap = class_map_of(spec, classes, storage_options)
    lut = None
    if cmap is not None:
        try:
            lut = cmap.lut(cmap.size or spec.classes)
        except ClassMapError as exc:
            raise ConfigError(f"model {spec.name!r}: {exc}") from None
    return MapsFolder(spec.maps, len(tuple(classes)), storage_options, lut=lut, **limits)


# ---- before any work: check and describe every model -------------------------------------------
@dataclass
class ModelReport:
    """What `madmine validate` shows of one model."""

    name: str
    role: str
    kind: str
    source: str
    version: str
    input_size: str
    precision: str
    device: str
    model_classes: int | None  # the model's own class count (None: a maps folder)
    predicted: list[str]  # config classes it can predict
    never: list[str]  # config classes it can never predict
    class_map: str  # "-" or the map's source
    trainable: bool


def _probe(loaded: LoadedModel, size: int) -> int:
    """Run the network once on a blank batch; returns its output class count."""
    with torch.inference_mode():
        try:
            logits = forward_logits(loaded.net, torch.zeros(1, 3, size, size))
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"model {loaded.spec.name!r} fails on a {size}x{size} input: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
    if logits.ndim != 4:
        raise ConfigError(
            f"model {loaded.spec.name!r} returns a tensor of shape {tuple(logits.shape)}; a segmentation model returns "
            "logits (N, classes, H, W)"
        )
    if tuple(logits.shape[-2:]) != (size, size):
        raise ConfigError(f"model {loaded.spec.name!r} returns logits of size {tuple(logits.shape[-2:])} for a {size}x{size} input")
    return int(logits.shape[1])


def _probe_size(loaded: LoadedModel) -> int:
    fixed = getattr(loaded.net, "fixed_size", None)
    if fixed is not None:
        if fixed != (loaded.spec.input_size, loaded.spec.input_size):
            raise ConfigError(
                f"model {loaded.spec.name!r}: the ONNX file takes inputs of {fixed[0]}x{fixed[1]} only; set input_size = "
                f"{fixed[0]}" + ("" if fixed[0] == fixed[1] else " (madmine feeds square inputs: export with a square or dynamic size)")
            )
        return loaded.spec.input_size
    return min(PROBE_SIZE, loaded.spec.input_size)


def inspect_models(config: Config) -> list[ModelReport]:
    """Build every model once, run it on a blank batch, and check its classes; one report per model.

    Raises ConfigError (naming the model and the fix) for a missing optional extra, a model whose
    output class count does not match the config or its class_map, or a target that can never
    predict one of the config's classes.
    """
    config = resolve(config)
    device = resolve_device(config.scoring.device)
    precision = resolve_precision(config.scoring.precision, device)
    reports = []
    for spec in config.models:
        version = model_version(spec, config.storage_options, config.classes)
        if not spec.is_network:
            folder = maps_folder(spec, config.classes, config.storage_options)
            if not folder.listing_fingerprint():
                raise ConfigError(f"model {spec.name!r}: maps folder {spec.maps!r} holds no files")
            cmap = class_map_of(spec, config.classes, config.storage_options)
            count = folder.num_classes
            reached = _reached(folder.lut, config.classes, cmap)
            reports.append(ModelReport(spec.name, spec.role, "maps", spec.maps, version, "own size", "-", "-", count,
                                       *reached, _map_source(spec), False))
            continue
        loaded = load_model(spec, config.classes, config.storage_options, warn=True)
        count = _probe(loaded, _probe_size(loaded))
        lut = loaded.lut_array(count)
        reached = _reached(lut, config.classes, loaded.class_map)
        run_precision, run_device = loaded.kind.runtime(loaded.net, device, precision)
        reports.append(ModelReport(
            spec.name, spec.role, loaded.kind.label, loaded.kind.source(spec), version, str(spec.input_size),
            run_precision, run_device, count, *reached, _map_source(spec), loaded.trainable,
        ))
    target = next(r for r in reports if r.role == "target")
    if target.never:
        raise ConfigError(
            f"the target {target.name!r} can never predict {', '.join(target.never)}: its class_map maps none of its "
            "classes to them. The target is judged on every config class; map its classes to these, or remove them "
            "from [classes] names"
        )
    return reports


def _map_source(spec: ModelSpec) -> str:
    if spec.class_map is None:
        return "-"
    return spec.class_map if isinstance(spec.class_map, str) else f"inline ({len(spec.class_map)} entries)"


def _reached(lut: np.ndarray | None, classes, cmap: ClassMap | None) -> tuple[list[str], list[str]]:
    if lut is None or cmap is None:
        return list(classes), []
    return cmap.coverage(lut)


def check_models(config: Config) -> dict[str, str]:
    """Build every model once and check its classes (see inspect_models); returns versions.

    Runs before any work starts, so a wrong weights file, class count or class map fails in seconds.
    """
    return {r.name: r.version for r in inspect_models(config)}
