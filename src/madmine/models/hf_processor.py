"""A Hugging Face checkpoint's preprocessing (input size, mean, std) from its preprocessor_config.json.

Read when the models are resolved (madmine.models.resolve), not when the config is parsed, and
without torch: resolving a config must stay cheap for commands that never build a network.
"""

from __future__ import annotations

import json
import os

from madmine.config import looks_like_hub_name
from madmine.errors import ConfigError
from madmine.workspace import filesystem, split_uri

PROCESSOR_FILE = "preprocessor_config.json"


def read_processor_config(value: str, storage_options: dict | None) -> dict | None:
    """The checkpoint's preprocessor_config.json as a dict (None where there is none)."""
    if looks_like_hub_name(value) and not os.path.exists(value):
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as exc:
            raise ConfigError(f"hf = {value!r} names a Hub checkpoint: pip install 'madmine[hf]' ({exc})") from exc
        try:
            path = hf_hub_download(value, PROCESSOR_FILE)
        except Exception as exc:
            raise ConfigError(
                f"hf = {value!r}: cannot read its {PROCESSOR_FILE} from the Hub ({type(exc).__name__}); set "
                "input_size, mean and std in the model entry, or point hf at a local copy"
            ) from exc
        with open(path, "rb") as fh:
            data = fh.read()
    else:
        uri = value.rstrip("/") + "/" + PROCESSOR_FILE
        try:
            data = filesystem(uri, storage_options).cat_file(split_uri(uri)[1])
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"hf = {value!r}: cannot read {PROCESSOR_FILE}: {exc}") from exc
    try:
        config = json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"hf = {value!r}: {PROCESSOR_FILE} is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"hf = {value!r}: {PROCESSOR_FILE} is not a JSON object")
    return config


def _size(config: dict) -> int | None:
    """The square input side a processor asks for: crop, height and width, or shortest edge."""
    if config.get("do_center_crop") and isinstance(config.get("crop_size"), dict):
        crop = config["crop_size"]
        if "height" in crop and "width" in crop:
            return int(max(crop["height"], crop["width"]))
    size = config.get("size")
    if isinstance(size, (int, float)):
        return int(size)
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return int(max(size["height"], size["width"]))
        if "shortest_edge" in size:
            return int(size["shortest_edge"])
    return None


def preprocessing(config: dict) -> dict:
    """{input_size, mean, std} for madmine's pixels in [0, 1] from a processor config.

    The processor computes (uint8 * rescale_factor - image_mean) / image_std; madmine computes
    (uint8 / 255 - mean) / std, so mean = image_mean / (255 * rescale_factor) and likewise std.
    """
    out: dict = {}
    size = _size(config)
    if size is not None:
        out["input_size"] = size
    scale = 255.0 * float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0
    if config.get("do_normalize", True) and config.get("image_mean") is not None and config.get("image_std") is not None:
        mean, std = config["image_mean"], config["image_std"]
        mean = [mean] * 3 if isinstance(mean, (int, float)) else list(mean)
        std = [std] * 3 if isinstance(std, (int, float)) else list(std)
        out["mean"] = tuple(float(m) / scale for m in mean)
        out["std"] = tuple(float(s) / scale for s in std)
    else:  # no normalisation: the model sees uint8 * rescale_factor
        out["mean"] = (0.0, 0.0, 0.0)
        out["std"] = (1.0 / scale,) * 3
    return out
