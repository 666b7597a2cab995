"""Model registry: torchvision architectures, user factories, precomputed maps, tiny nets."""

from madmine.models.maps import MapsFolder
from madmine.models.registry import build_network, check_models, forward_logits, model_version

__all__ = ["MapsFolder", "build_network", "check_models", "forward_logits", "model_version"]
