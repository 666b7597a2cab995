"""Tiny models of every kind, randomly initialised (or colour-reading) and saved locally: no download.

- Hugging Face: a SegFormer (semantic) and a Mask2Former (universal) of a few thousand
  parameters, written with save_pretrained beside their image processor;
- segmentation_models_pytorch: an FPN on mobilenet_v2, its state_dict saved;
- TorchScript and ONNX: traced / exported copies of any torch module;
- PermutedColourNet: ColourNet (worlds.py) over a label set of its own, so that a class map
  that undoes the permutation must give ColourNet's maps exactly.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from madmine.torchvision_compat import import_torchvision
from worlds import ColourNet

import_torchvision()  # transformers and timm import torchvision: the repaired import first


def _quiet():
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def segformer(num_labels: int, id2label: dict[int, str] | None = None, seed: int = 0):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    _quiet()
    config = SegformerConfig(
        num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
        patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2],
        decoder_hidden_size=16, num_labels=num_labels,
        **({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}),
    )
    torch.manual_seed(seed)
    return SegformerForSemanticSegmentation(config).eval()


def save_segformer(folder: Path, num_labels: int, size: int = 32, id2label=None, seed: int = 0, **processor) -> Path:
    """A tiny SegFormer and its SegformerImageProcessor (size x size, given mean/std/rescale) in `folder`."""
    from transformers import SegformerImageProcessor

    model = segformer(num_labels, id2label, seed)
    model.save_pretrained(folder)
    SegformerImageProcessor(size={"height": size, "width": size}, **processor).save_pretrained(folder)
    return folder


def save_mask2former(folder: Path, num_labels: int, size: int = 64, seed: int = 0, id2label=None) -> Path:
    """A tiny Mask2Former (Swin backbone, 5 queries) and its image processor in `folder`."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor, SwinConfig

    _quiet()
    backbone = SwinConfig(image_size=size, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=2, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(
        backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=32,
        dim_feedforward=32, encoder_layers=1, decoder_layers=2, num_queries=5, num_attention_heads=2,
        num_labels=num_labels, common_stride=4,
        **({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}),
    )
    torch.manual_seed(seed)
    Mask2FormerForUniversalSegmentation(config).eval().save_pretrained(folder)
    Mask2FormerImageProcessor(size={"shortest_edge": size}).save_pretrained(folder)
    return folder


SMP_ARCH, SMP_ENCODER = "FPN", "mobilenet_v2"


def smp_model(classes: int, seed: int = 0) -> nn.Module:
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    return smp.create_model(SMP_ARCH, encoder_name=SMP_ENCODER, encoder_weights=None, classes=classes).eval()


def save_smp(path: Path, classes: int, seed: int = 0) -> Path:
    torch.save(smp_model(classes, seed).state_dict(), path)
    return path


class Logits(nn.Module):
    """A module returning the logits tensor of a torchvision-style {"out": ...} model."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)["out"]


def save_torchscript(path: Path, net: nn.Module, size: int = 32) -> Path:
    with torch.no_grad():
        traced = torch.jit.trace(net.eval(), torch.zeros(2, 3, size, size), strict=False)
    traced.save(str(path))
    return path


def save_onnx(path: Path, net: nn.Module, size: int = 32, dynamic: bool = True, batch: int = 1) -> Path:
    """The legacy exporter (no onnxscript needed): input "pixels", output "logits"."""
    axes = {"pixels": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}} if dynamic else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(batch, 3, size, size),), str(path), input_names=["pixels"],
                          output_names=["logits"], dynamic_axes=axes, dynamo=False)
    return path


# ---- ColourNet over a label set of its own ------------------------------------------------------
# model class -> config class (worlds.CLASSES: background, red, green, blue); "sky" and "void" never win
PERMUTED = ["green", "sky", "background", "red", "void", "blue"]


class PermutedColourNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.colour = ColourNet(4)

    def forward(self, x):
        out = self.colour(x)["out"]  # background, red, green, blue
        never = torch.full_like(out[:, :1], -1e4)
        return torch.cat([out[:, 2:3], never, out[:, 0:1], out[:, 1:2], never, out[:, 3:4]], dim=1)


def permuted_csv(path: Path) -> Path:
    rows = ["# ColourNet's classes in another order, with two it never predicts", "id,name,class"]
    rows += [f"{i},{name},{name if name not in ('sky', 'void') else 'ignore'}" for i, name in enumerate(PERMUTED)]
    path.write_text("\n".join(rows) + "\n")
    return path
