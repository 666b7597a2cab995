"""Hugging Face Transformers segmentation checkpoints (`hf = "path/" | "s3://..." | "org/name"`).

Semantic models (AutoModelForSemanticSegmentation: SegFormer, UperNet, DPT, BEiT, MobileViT...)
return logits at a fraction of the input size; the wrapper upsamples them bilinearly to the
input size, as the processors' own post-processing does. Universal models (Mask2Former,
MaskFormer, OneFormer) return class and mask logits per query; the wrapper turns them into
per-class scores with the checkpoint's image processor (`post_process_semantic_segmentation`
with `return_segmentation_scores=True`) and returns their logarithm, so that the argmax is the
processor's semantic map and a softmax gives the scores normalised per pixel.

Preprocessing comes from the checkpoint's `preprocessor_config.json`, read when the config is
parsed (`preprocessing`): the input size (a square: the processor's height and width, or its
shortest edge), and mean and std as madmine applies them to pixels in [0, 1] (the processor's
rescale factor and do_normalize are folded in). Keys written in the model entry win.

A fine-tuned version is a state_dict applied to the config's checkpoint (`weights = ...`): the
checkpoint keeps the architecture and processor, the weights file the new parameters, and the
version is the hash of that file, as for every other kind.
"""

from __future__ import annotations

import json
import logging
import os
import re

import torch
import torch.nn.functional as F
from torch import nn

from madmine.config import ConfigError, ModelSpec
from madmine.models.kinds.base import Kind, folder_digest, is_remote, local_folder
from madmine.torchvision_compat import import_torchvision
from madmine.workspace import filesystem, split_uri

log = logging.getLogger(__name__)

WEIGHT_FILES = re.compile(r".*\.(safetensors|bin|pt|pth|ckpt|h5|msgpack)$")
PROCESSOR_FILE = "preprocessor_config.json"


def is_hub_name(value: str) -> bool:
    """`org/name` on the Hugging Face Hub, as opposed to a local folder or a URI."""
    return (
        not is_remote(value)
        and not os.path.isabs(value)
        and not value.startswith((".", "~"))
        and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", value) is not None
        and not os.path.exists(value)
    )


def _hub_folder(name: str) -> str:
    """A hub checkpoint's local snapshot (downloads where the machine may)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ConfigError(f"hf = {name!r} names a Hub checkpoint: pip install 'madmine[hf]' ({exc})") from exc
    try:
        return snapshot_download(name)
    except Exception as exc:  # offline, unknown repository, no access
        raise ConfigError(
            f"hf = {name!r}: cannot fetch it from the Hugging Face Hub ({type(exc).__name__}: {str(exc)[:200]}); "
            "download it where the machine may and point hf at the folder (or an s3:// copy)"
        ) from exc


def checkpoint_folder(value: str, storage_options: dict | None) -> str:
    """A local folder holding the checkpoint: the folder itself, a copy of an s3:// one, or a hub snapshot."""
    if is_hub_name(value):
        return _hub_folder(value)
    folder = local_folder(value, storage_options)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ConfigError(f"hf = {value!r} holds no config.json: not a Hugging Face checkpoint folder (save_pretrained writes one)")
    return folder


# ---- preprocessing, read from the processor's JSON when the config is parsed ------------------------
def read_processor_config(value: str, storage_options: dict | None) -> dict | None:
    """The checkpoint's preprocessor_config.json as a dict (None where there is none)."""
    if is_hub_name(value):
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


# ---- the wrappers -------------------------------------------------------------------------------
class HFSemantic(nn.Module):
    """AutoModelForSemanticSegmentation -> logits (N, K, S, S), upsampled to the input."""

    trainable = True

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(pixel_values=x).logits
        if tuple(logits.shape[-2:]) != tuple(x.shape[-2:]):
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


class HFUniversal(nn.Module):
    """Mask2Former / MaskFormer / OneFormer -> log of the processor's per-class semantic scores (N, K, S, S)."""

    trainable = False  # trained with set-prediction losses, which madmine's fine-tuning does not implement
    FLOOR = 1e-6

    def __init__(self, inner: nn.Module, processor, task_inputs: torch.Tensor | None = None):
        super().__init__()
        self.inner = inner
        self.processor = processor
        self.task_inputs = task_inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kwargs = {"pixel_values": x}
        if self.task_inputs is not None:
            kwargs["task_inputs"] = self.task_inputs.to(x.device).expand(len(x), -1)
        out = self.inner(**kwargs)
        size = tuple(x.shape[-2:])
        results = self.processor.post_process_semantic_segmentation(
            out, target_sizes=[size] * len(x), return_segmentation_scores=True
        )
        scores = torch.stack([r["segmentation_scores"] for r in results]).float()
        return torch.log(scores.clamp_min(self.FLOOR))


class HFKind(Kind):
    key = "hf"
    label = "Hugging Face"
    extra = "hf"
    modules = ("transformers",)
    trainable = True  # semantic models; universal ones say no (HFUniversal.trainable)
    takes_weights = True
    intrinsic_classes = True

    def require(self, spec: ModelSpec) -> None:
        import_torchvision()  # transformers' image processors import torchvision: repair it first
        super().require(spec)

    def own_digest(self, spec: ModelSpec, storage_options: dict | None) -> str:
        if is_hub_name(spec.hf):
            return folder_digest(_hub_folder(spec.hf), None)
        return folder_digest(spec.hf, storage_options)

    def build(self, spec: ModelSpec, num_outputs: int | None, storage_options: dict | None, state: dict | None = None) -> nn.Module:
        import transformers
        from transformers.models.auto import modeling_auto

        transformers.utils.logging.disable_progress_bar()
        folder = checkpoint_folder(spec.hf, storage_options)
        try:
            config = transformers.AutoConfig.from_pretrained(folder)
        except Exception as exc:
            raise ConfigError(f"model {spec.name!r}: hf = {spec.hf!r} has no readable config.json: {exc}") from exc
        semantic = modeling_auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES
        universal = modeling_auto.MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES
        if config.model_type in semantic:
            auto = transformers.AutoModelForSemanticSegmentation
        elif config.model_type in universal:
            auto = transformers.AutoModelForUniversalSegmentation
        else:
            raise ConfigError(
                f"model {spec.name!r}: hf = {spec.hf!r} is a {config.model_type!r} model, not a segmentation model; "
                f"semantic: {', '.join(sorted(semantic))}; universal: {', '.join(sorted(universal))}"
            )
        has_weights = any(WEIGHT_FILES.match(f) for f in os.listdir(folder))
        try:
            if has_weights:
                inner = auto.from_pretrained(folder, dtype=torch.float32)
            else:  # a config without weights: random initialisation, as an arch without weights
                log.warning("model %r: %s holds no weights file: random initialisation", spec.name, spec.hf)
                inner = auto.from_config(config)
        except Exception as exc:
            raise ConfigError(f"model {spec.name!r}: hf = {spec.hf!r} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        inner = inner.float().eval()
        if auto is transformers.AutoModelForSemanticSegmentation:
            return HFSemantic(inner)
        try:
            processor = transformers.AutoProcessor.from_pretrained(folder)
        except Exception as exc:
            raise ConfigError(
                f"model {spec.name!r}: the universal model {spec.hf!r} needs its processor "
                f"({PROCESSOR_FILE}) for the semantic post-processing: {exc}"
            ) from exc
        task_inputs = None
        if config.model_type == "oneformer":
            import numpy as np

            blank = np.zeros((32, 32, 3), dtype=np.uint8)
            task_inputs = processor(images=[blank], task_inputs=["semantic"], return_tensors="pt")["task_inputs"]
        return HFUniversal(inner, getattr(processor, "image_processor", processor), task_inputs)

    def labels(self, net: nn.Module) -> tuple[str, ...] | None:
        config = net.inner.config
        names = [str(config.id2label.get(i, "")) for i in range(config.num_labels)]
        if all(re.fullmatch(r"LABEL_\d+", n) for n in names):  # transformers' placeholders: no names
            return None
        return tuple(names)

    def output_classes(self, net: nn.Module) -> int | None:
        return int(net.inner.config.num_labels)
