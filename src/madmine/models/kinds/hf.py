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

import logging
import os
import re

import torch
import torch.nn.functional as F
from torch import nn

from madmine.config import ModelSpec, looks_like_hub_name
from madmine.errors import ConfigError
from madmine.models.hf_processor import PROCESSOR_FILE
from madmine.models.kinds.base import Kind, folder_digest, local_folder
from madmine.torchvision_compat import import_torchvision

log = logging.getLogger(__name__)

WEIGHT_FILES = re.compile(r".*\.(safetensors|bin|pt|pth|ckpt|h5|msgpack)$")


def is_hub_name(value: str) -> bool:
    """`org/name` on the Hugging Face Hub, as opposed to a local folder or a URI."""
    return looks_like_hub_name(value) and not os.path.exists(value)


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
