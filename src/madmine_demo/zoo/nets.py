"""The demo's model zoo: four segmentation networks of genuinely different designs.

MAD finds failures where models disagree, so the competitors must not share the target's
blind spots: a DeepLab-style network (residual backbone at stride 8, atrous spatial
pyramid pooling) is the target, as in the paper; a small U-Net (full-resolution skips), a
dilated FCN (stride 4, no decoder) and a MobileNetV3-style network with an LR-ASPP head
(depthwise convolutions, squeeze-excitation, a globally gated head) compete with it.
torchvision's own lraspp_mobilenet_v3_large costs about 1.3 s per training step of 16
images at 64 px on this 2-core CPU (3x the target), too much to train from scratch within
the demo's budget; `mobile` is the same design at a size that fits. Each is a factory the normal config
builds (`factory = "madmine_demo.zoo.nets:unet"`), so the demo exercises the same
registry a user's own network goes through.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class UNet(nn.Module):
    """Three poolings, skip connections at every scale: sharp boundaries, small receptive field."""

    def __init__(self, num_classes: int, width: int = 12):
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(_conv(3, w), _conv(w, w))
        self.enc2 = nn.Sequential(_conv(w, 2 * w, stride=2), _conv(2 * w, 2 * w))
        self.enc3 = nn.Sequential(_conv(2 * w, 4 * w, stride=2), _conv(4 * w, 4 * w))
        self.mid = nn.Sequential(_conv(4 * w, 4 * w, stride=2), _conv(4 * w, 4 * w))
        self.dec3 = _conv(8 * w, 2 * w)
        self.dec2 = _conv(4 * w, w)
        self.dec1 = _conv(2 * w, w)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        m = self.mid(e3)
        d3 = self.dec3(torch.cat([_upsample(m, e3.shape[-2:]), e3], 1))
        d2 = self.dec2(torch.cat([_upsample(d3, e2.shape[-2:]), e2], 1))
        d1 = self.dec1(torch.cat([_upsample(d2, e1.shape[-2:]), e1], 1))
        return {"out": self.head(d1)}


class DilatedFCN(nn.Module):
    """Stride 4, then a stack of dilated convolutions (2, 4, 8) and a 1x1 classifier: no decoder."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        w = width
        self.stem = nn.Sequential(_conv(3, w // 2, stride=2), _conv(w // 2, w, stride=2))
        self.body = nn.Sequential(_conv(w, w, dilation=1), _conv(w, 2 * w, dilation=2), _conv(2 * w, 2 * w, dilation=4),
                                  _conv(2 * w, 2 * w, dilation=8))
        self.head = nn.Conv2d(2 * w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": _upsample(self.head(self.body(self.stem(x))), x.shape[-2:])}


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            _conv(cin, cout, stride=stride),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class ASPP(nn.Module):
    """DeepLab's atrous spatial pyramid pooling: parallel rates plus image-level context."""

    def __init__(self, cin: int, cout: int, rates=(2, 4, 6)):
        super().__init__()
        self.branches = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))]
            + [_conv(cin, cout, dilation=r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(
            nn.Conv2d(cout * (len(rates) + 2), cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [b(x) for b in self.branches]
        feats.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(feats, 1))


class DeepLabASPP(nn.Module):
    """Residual backbone to stride 8, ASPP head, bilinear upsampling: coarse maps, wide context."""

    def __init__(self, num_classes: int, width: int = 24):
        super().__init__()
        w = width
        self.backbone = nn.Sequential(
            _conv(3, w, stride=2),
            _Residual(w, w),
            _Residual(w, 2 * w, stride=2),
            _Residual(2 * w, 4 * w, stride=2),
            _Residual(4 * w, 4 * w),
        )
        self.aspp = ASPP(4 * w, 4 * w)
        self.head = nn.Conv2d(4 * w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": _upsample(self.head(self.aspp(self.backbone(x))), x.shape[-2:])}


class _InvertedResidual(nn.Module):
    """MobileNetV3's block: expand (1x1), depthwise 3x3, squeeze-excitation, project (1x1)."""

    def __init__(self, cin: int, expand: int, cout: int, stride: int = 1, dilation: int = 1, se: bool = False):
        super().__init__()
        layers = [nn.Conv2d(cin, expand, 1, bias=False), nn.BatchNorm2d(expand), nn.Hardswish(inplace=True),
                  nn.Conv2d(expand, expand, 3, stride=stride, padding=dilation, dilation=dilation, groups=expand, bias=False),
                  nn.BatchNorm2d(expand), nn.Hardswish(inplace=True)]
        if se:
            layers.append(_SqueezeExcite(expand))
        layers += [nn.Conv2d(expand, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels // 4, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(channels // 4, channels, 1), nn.Hardsigmoid(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)


class MobileLRASPP(nn.Module):
    """A small MobileNetV3-style backbone (depthwise separable blocks, squeeze-excitation,
    hard-swish) with the LR-ASPP head: globally gated stride-8 features plus a stride-4 skip.
    The design of torchvision's lraspp_mobilenet_v3_large at a size this CPU can train."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.low = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.Hardswish(inplace=True),
            _InvertedResidual(16, 32, 16),
            _InvertedResidual(16, 48, 24, stride=2),
            _InvertedResidual(24, 72, 24),
        )
        self.high = nn.Sequential(
            _InvertedResidual(24, 96, 40, stride=2, se=True),
            _InvertedResidual(40, 120, 40, se=True),
            _InvertedResidual(40, 160, 48, dilation=2, se=True),
            _InvertedResidual(48, 192, 48, dilation=4, se=True),
        )
        self.cbr = nn.Sequential(nn.Conv2d(48, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(48, 64, 1, bias=False), nn.Sigmoid())
        self.low_classifier = nn.Conv2d(24, num_classes, 1)
        self.high_classifier = nn.Conv2d(64, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self.low(x)
        high = self.high(low)
        y = _upsample(self.cbr(high) * self.gate(high), low.shape[-2:])
        logits = self.low_classifier(low) + self.high_classifier(y)
        return {"out": _upsample(logits, x.shape[-2:])}


def deeplab(num_classes: int) -> nn.Module:
    return DeepLabASPP(num_classes)


def unet(num_classes: int) -> nn.Module:
    return UNet(num_classes)


def fcn(num_classes: int) -> nn.Module:
    return DilatedFCN(num_classes)


def mobile(num_classes: int) -> nn.Module:
    return MobileLRASPP(num_classes)
