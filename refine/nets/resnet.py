"""ResNet-34 feature extractor for DRE-F-SP (Ding, Wang & Welch 2020).

The body is timm's ``resnet34`` (BasicBlocks in stages of 3, 4, 6, 3), built with
``pretrained=False`` — nothing is downloaded — and ``in_chans`` set to the data's channels
(1 for MNIST, 3 for CIFAR-10). For small images the ImageNet stem (7x7 stride-2 convolution
and max-pool, a 4x reduction) is replaced by a CIFAR-style stem: one 3x3 convolution,
stride ``stem_stride`` (1 as for CIFAR; 2 halves the cost of every later layer), no max-pool.
After global average pooling a linear layer (with BatchNorm and ReLU) maps to the feature
space, and a second linear layer to class logits. The network is trained as a classifier
by cross-entropy and then frozen; :meth:`ResNetFeatures.features` gives the features.

``widths`` sets the channels of the four stages. The standard ``(64, 128, 256, 512)`` has
21 M parameters (85 MB) and costs about 1 GFLOP per 32 px image; narrower stages keep the
depth and the structure at a fraction of the size and cost (``(16, 32, 64, 128)``: 1.3 M).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from . import register_arch

__all__ = ["ResNetFeatures", "resnet34_features", "STEMS"]

STEMS = ("cifar", "imagenet")


class ResNetFeatures(nn.Module):
    """ResNet-34 body + ``Linear -> BatchNorm -> ReLU`` feature layer + linear classifier."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        feature_dim: int = 256,
        widths=(64, 128, 256, 512),
        stem: str = "cifar",
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or any(w < 1 for w in widths):
            raise ConfigError(f"widths must be four positive stage widths, got {widths}")
        if stem not in STEMS:
            raise ConfigError(f"unknown stem {stem!r}; valid: {', '.join(STEMS)}")
        if in_channels < 1 or num_classes < 2 or feature_dim < 1 or stem_stride not in (1, 2):
            raise ConfigError(
                f"need in_channels >= 1, num_classes >= 2, feature_dim >= 1, stem_stride 1 or 2; got {in_channels}, {num_classes}, {feature_dim}, {stem_stride}"
            )
        from .. import _compat

        _compat.ensure_torchvision()
        import timm

        body = timm.create_model("resnet34", pretrained=False, num_classes=0, in_chans=in_channels, channels=widths)
        if stem == "cifar":
            stem_out = body.conv1.out_channels
            body.conv1 = nn.Conv2d(in_channels, stem_out, 3, stem_stride, 1, bias=False)
            nn.init.kaiming_normal_(body.conv1.weight, mode="fan_out", nonlinearity="relu")
            body.maxpool = nn.Identity()
        self.body = body
        self.in_channels = in_channels
        self.feature_dim = feature_dim
        self.embed = nn.Sequential(
            nn.Linear(body.num_features, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True)
        )
        self.classifier = nn.Linear(feature_dim, num_classes)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(f"the feature network takes images (N, {self.in_channels}, H, W); got {tuple(x.shape)}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` in [-1, 1] -> ``(N, feature_dim)`` (non-negative, after ReLU)."""
        self._check(x)
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)``."""
        return self.classifier(self.features(x))


@register_arch("resnet34-features")
def resnet34_features(
    in_channels: int = 3,
    num_classes: int = 10,
    feature_dim: int = 256,
    widths=(64, 128, 256, 512),
    stem: str = "cifar",
    stem_stride: int = 1,
) -> ResNetFeatures:
    """ResNet-34 (timm, not pretrained) with a CIFAR-style stem and a linear feature layer."""
    return ResNetFeatures(in_channels, num_classes, feature_dim, tuple(widths), stem, stem_stride)
