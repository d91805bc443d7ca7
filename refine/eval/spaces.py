"""Feature spaces: the frozen networks that map 8-bit images to features (and class logits) for scoring.

- ``inception``: pytorch-fid's Inception network (2048-d pool3 features, 1008-way logits for
  the Inception Score), weights from an explicit path, ``$REFINE_INCEPTION_WEIGHTS`` or the
  torch hub cache (:func:`refine.metrics.inception.find_inception_weights`; never downloaded).
  The network's name records the weights' sha256 and says when they are not the published file
  (whose sha256 starts with ``6726825d``, as its name says).
- a dataset-trained classifier (Ding et al.'s protocol): a ``refine.features`` file
  (:mod:`refine.eval.classifier`; ``refine train-classifier``) or a DRE-F-SP ratio file (``refine
  fit-ratio --kind feature-sp``), whose frozen ResNet feature network is such a classifier. Its
  features replace Inception's for FID and precision/recall; the Inception Score is computed
  from its class logits and named after it.
- ``timm:NAME`` with a local weights file (``--features-weights``): any timm network's pooled
  features (DINOv2, CLIP image towers, ...), see :mod:`refine.metrics.timm_net`; no IS.

The network's own preprocessing runs on each batch on the network's device.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..device import module_device
from ..errors import CheckpointError, ConfigError, ShapeError
from ..io import RATIO_FORMAT, file_sha256, safe_load
from ..metrics.features import extract_features
from ..metrics.keys import MetricKeys, metric_keys
from ..metrics.timm_net import build_timm_features, is_timm_spec, timm_name
from .classifier import FEATURES_FORMAT, classifier_from_dict, feature_network_from_ratio
from .images import check_uint8

__all__ = [
    "FeatureSpace",
    "inception_space",
    "classifier_space",
    "timm_space",
    "load_feature_space",
]

#: sha256 prefix of the published FID Inception weights (the hash part of their file name).
_FID_WEIGHTS_SHA256_PREFIX = "6726825d"


@dataclass
class FeatureSpace:
    """A frozen network that maps 8-bit images to features (and, where it has them, class logits).

    ``network`` is the human-readable name every reported number carries; ``key`` identifies
    the network and its weights in the statistics cache; ``logits`` names the logits the
    Inception Score is computed from (None: no IS in this space).
    """

    short: str
    network: str
    key: str
    module: nn.Module
    transform: Callable[[torch.Tensor], torch.Tensor]
    logits: str | None
    source: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return module_device(self.module)

    @property
    def inception(self) -> bool:
        """Whether this is the Inception space, the only one whose distances are called FID and KID."""
        return self.short == "inception"

    @property
    def keys(self) -> MetricKeys:
        """The result keys of this space (``fid``/``kid_*`` for Inception, ``fd``/``kd_*`` otherwise)."""
        return metric_keys(self.inception)

    def describe(self) -> dict:
        return {
            "short": self.short,
            "network": self.network,
            "cache_key": self.key,
            "logits": self.logits,
            **self.source,
        }

    def extract(
        self, images: torch.Tensor, *, batch_size: int = 50, progress: bool = False, desc: str = "features"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features ``(N, D)`` and logits ``(N, K)`` (or None) of ``uint8 (N, C, H, W)`` images, on the CPU."""
        check_uint8(images, "images")
        if self.logits is None:
            return extract_features(
                self.module, images, batch_size=batch_size, transform=self.transform, progress=progress, desc=desc
            ), None
        return extract_features(
            self.module,
            images,
            batch_size=batch_size,
            transform=self.transform,
            with_logits=True,
            progress=progress,
            desc=desc,
        )


def inception_space(weights: str | os.PathLike | None = None, *, device: torch.device | str = "cpu") -> FeatureSpace:
    """pytorch-fid's Inception (pool3 features, 1008-way logits) with the FID weights found locally."""
    # pytorch-fid and torchvision's Inception load only when this space is asked for
    from ..metrics.inception import FID_WEIGHTS_FILE, find_inception_weights, load_inception, to_inception_input

    path = find_inception_weights(weights)
    net = load_inception(path, device=device)
    sha = file_sha256(path)
    official = sha.startswith(_FID_WEIGHTS_SHA256_PREFIX)
    note = "" if official else f"; NOT the published weights (sha256 {sha[:12]}), not comparable with published numbers"
    return FeatureSpace(
        short="inception",
        network=f"FID Inception v3, pool3 2048-d ({FID_WEIGHTS_FILE}{note})",
        key=f"inception-fid-{sha[:16]}",
        module=net,
        transform=lambda x: to_inception_input(x, value_range=(0.0, 255.0)),
        logits="Inception 1008-way logits",
        source={"weights": str(path), "sha256": sha, "published_weights": official},
    )


class _FeaturesAndLogits(nn.Module):
    """``x -> (net.features(x), logits)`` in one pass (``net.classifier`` on the features when it has one)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        f = self.net.features(x)
        head = getattr(self.net, "classifier", None)
        logits = head(f) if isinstance(head, nn.Module) else self.net(x)
        return f, logits


def _classifier_transform(channels: int, image_size: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """8-bit images -> float in [-1, 1] with the network's channels and size (bilinear, antialiased)."""
    luma = torch.tensor([0.299, 0.587, 0.114])

    def transform(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] != channels:
            if channels == 3 and x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            elif channels == 1 and x.shape[1] == 3:
                x = (x * luma.to(x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
            else:
                raise ShapeError(f"the feature network takes {channels}-channel images; got {x.shape[1]} channels")
        x = x / 127.5 - 1.0
        if image_size is not None and (x.shape[-1] != image_size or x.shape[-2] != image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
        return x

    return transform


def classifier_space(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> FeatureSpace:
    """The features and class logits of a dataset-trained classifier stored at ``path``.

    ``path``: a ``refine.features`` file (:func:`refine.eval.save_classifier`) or a ``feature-sp``
    ratio file (its frozen feature network). Images are converted to the channels and size the
    network was trained on.
    """
    p = Path(path)
    obj = safe_load(p, what="feature network file")
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt == FEATURES_FORMAT:
        net, info = classifier_from_dict(obj, str(p))
        what = "classifier"
    elif fmt == RATIO_FORMAT and obj.get("kind") == "feature-sp":
        net, info = feature_network_from_ratio(obj, str(p))
        what = "DRE-F-SP feature network"
    else:
        if fmt == RATIO_FORMAT:
            found = f"a ratio file of kind {obj.get('kind')!r}"
        elif fmt:
            found = f"a {fmt} file"
        else:
            found = "a dict without a format entry" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise CheckpointError(
            f"--features {p} holds {found}, not a feature network; pass a classifier file ({FEATURES_FORMAT}, "
            "refine train-classifier) or a feature-sp ratio file, or 'inception'"
        )
    net = net.eval().requires_grad_(False).to(device)
    sha = file_sha256(p)
    arch = info["arch"].get("name", "?")
    classes = info.get("num_classes")
    trained = f", trained on {info['dataset']}" if info.get("dataset") else ""
    acc = f", held-out accuracy {info['val_acc']:.4f}" if isinstance(info.get("val_acc"), (int, float)) else ""
    dim = info.get("feature_dim")
    return FeatureSpace(
        short="classifier",
        network=f"{what} {arch} {dim}-d features from {p.name} (sha256 {sha[:12]}{trained}{acc})",
        key=f"classifier-{arch}-{sha[:16]}",
        module=_FeaturesAndLogits(net).eval(),
        transform=_classifier_transform(info["channels"], info.get("image_size")),
        logits=f"{p.name} {classes}-way class logits" if classes else f"{p.name} class logits",
        source={
            "path": str(p),
            "sha256": sha,
            "kind": what,
            "arch": info["arch"],
            "image_size": info.get("image_size"),
            "channels": info["channels"],
        },
    )


def timm_space(name: str, weights: str | os.PathLike, *, device: torch.device | str = "cpu") -> FeatureSpace:
    """The pooled features of timm model ``name`` with the weights in the local file ``weights`` (never downloaded)."""
    net, transform, info = build_timm_features(name, weights, device=device)
    sha = info["sha256"]
    return FeatureSpace(
        short=f"timm-{name}",
        network=f"timm {name}, {info['feature_dim']}-d pooled features (weights {Path(weights).name}, sha256 {sha[:12]})",
        key=f"timm-{name}-{sha[:16]}",
        module=net,
        transform=transform,
        logits=None,
        source={"path": str(weights), **info},
    )


def load_feature_space(
    features: str | os.PathLike,
    *,
    inception_weights: str | os.PathLike | None = None,
    features_weights: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
) -> FeatureSpace:
    """``"inception"`` -> :func:`inception_space`; ``"timm:NAME"`` -> :func:`timm_space` with ``features_weights``;
    any other value is a file for :func:`classifier_space`."""
    text = str(features).strip()
    if inception_weights is not None and text.lower() != "inception":
        raise ConfigError(
            f"--inception-weights is for --features inception; --features {features} names another network"
        )
    if is_timm_spec(text):
        if features_weights is None:
            raise ConfigError(
                f"--features {text} needs --features-weights PATH (a safetensors or state_dict file of that model); "
                "refine never downloads weights"
            )
        return timm_space(timm_name(text), features_weights, device=device)
    if features_weights is not None:
        raise ConfigError(
            f"--features-weights is for --features timm:NAME; --features {features} brings its own weights"
        )
    if text.lower() == "inception":
        return inception_space(inception_weights, device=device)
    return classifier_space(features, device=device)
