"""Tiny segmentation networks: real convolutional models small enough for tests on CPU."""

from __future__ import annotations

import torch
from torch import nn


class TinySegNet(nn.Module):
    """Encoder of strided convolutions, 1x1 classifier, bilinear upsampling to the input size."""

    def __init__(self, num_classes: int, width: int = 8, dilation: int = 1):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(2 * width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.encoder(x))
        return {"out": nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)}


def tiny_segnet(num_classes: int) -> nn.Module:
    return TinySegNet(num_classes, width=8)


def tiny_dilated(num_classes: int) -> nn.Module:
    return TinySegNet(num_classes, width=12, dilation=2)
