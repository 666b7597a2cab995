"""Model registry: every kind of model (models/kinds/), class maps, precomputed maps, tiny nets."""

from madmine.models.maps import MapsFolder
from madmine.models.registry import (
    LoadedModel,
    build_network,
    check_models,
    forward_logits,
    inspect_models,
    load_model,
    model_version,
)

__all__ = [
    "LoadedModel",
    "MapsFolder",
    "build_network",
    "check_models",
    "forward_logits",
    "inspect_models",
    "load_model",
    "model_version",
]
