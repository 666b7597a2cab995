"""Resolving a parsed config's models: class maps read and checked, checkpoints' preprocessing read.

Parsing (madmine.config) checks the file's shape and nothing else: it imports no torch and
reaches no network, so `madmine sql` or `madmine rate serve` never pay for models they do not
use. The commands that build, score or train models resolve first, before any work starts:
a class map that names an unknown class, or a checkpoint whose preprocessor file is broken,
still fails in one line before the first image is read.
"""

from __future__ import annotations

import dataclasses

from pydantic import ValidationError

from madmine.config import Config, ModelSpec
from madmine.errors import ConfigError
from madmine.models.classmap import load_class_map
from madmine.models.hf_processor import preprocessing, read_processor_config
from madmine.workspace import is_remote

PREPROCESSING_KEYS = ("input_size", "mean", "std")


def resolve(config: Config) -> Config:
    """The config with every model resolved; resolving a resolved config returns it unchanged."""
    if config.models_resolved:
        return config
    models = []
    for spec in config.models:
        where = f"[[models]] {spec.name!r}"
        check_class_map(spec, where, config.classes, config.storage_options)
        if spec.kind == "hf":
            spec = hf_preprocessing(spec, config.entry(spec.name), where, config.storage_options)
        models.append(spec)
    return dataclasses.replace(config, models=tuple(models), models_resolved=True)


def check_class_map(spec: ModelSpec, where: str, classes: tuple[str, ...], storage_options: dict) -> None:
    """A model's class_map read and checked against its class count and the config's class names."""
    if spec.class_map is None:
        return
    value = spec.class_map
    if isinstance(value, str) and is_remote(value):
        return  # read when the models are built, with the storage options
    try:
        cmap = load_class_map(value, classes, storage_options)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if cmap.size is not None and spec.classes is not None and cmap.size != spec.classes:
        raise ConfigError(f"{where}: classes = {spec.classes} but its class_map lists {cmap.size} model classes")
    if spec.kind in ("arch", "factory", "smp", "maps") and cmap.size is None and spec.classes is None:
        raise ConfigError(
            f"{where}: set classes = N, the number of classes the {spec.kind} model predicts (its inline class_map "
            "does not list them all)"
        )


def hf_preprocessing(spec: ModelSpec, entry: dict, where: str, storage_options: dict) -> ModelSpec:
    """A Hugging Face model's input size, mean and std from its processor, unless the entry sets them."""
    unset = [k for k in PREPROCESSING_KEYS if k not in entry]
    if not unset:
        return spec
    processor = read_processor_config(spec.hf, storage_options)
    if processor is None:  # no processor file: madmine's defaults, as for any other kind
        return spec
    found = preprocessing(processor)
    change = {k: found[k] for k in unset if k in found}
    if not change:
        return spec
    try:
        return dataclasses.replace(spec, **change)
    except ValidationError as exc:
        raise ConfigError(f"{where}: the checkpoint's preprocessor_config.json gives {change}: {exc.errors()[0]['msg']}") from None
