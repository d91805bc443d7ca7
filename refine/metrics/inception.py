"""pytorch-fid's Inception network (FID weights), loaded from a local file only.

The FID network is torchvision's ``Inception3`` (1008 classes, no auxiliary head) with some
mixed blocks replaced by pytorch-fid's ``FIDInception*`` blocks, which reproduce the original
TensorFlow graph. :func:`build_fid_inception` builds that architecture exactly as
``pytorch_fid.inception.fid_inception_v3`` does, but without its download; weights come from
``pt_inception-2015-12-05-6726825d.pth`` found by :func:`find_inception_weights`.

:class:`FIDInceptionV3` returns the 2048-d pool3 features (FID, precision/recall) and 1008-way
logits (Inception Score). Images are resized to 299x299 with the same bilinear interpolation as
pytorch-fid; :func:`to_inception_input` maps a declared value range to the network's [-1, 1].
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._compat import ensure_torchvision
from ..errors import CheckpointError, ConfigError, MissingWeightsError, ShapeError
from .features import extract_features

ensure_torchvision()

from pytorch_fid.inception import (  # noqa: E402
    FID_WEIGHTS_URL,
    FIDInceptionA,
    FIDInceptionC,
    FIDInceptionE_1,
    FIDInceptionE_2,
)
from torchvision.models.inception import Inception3  # noqa: E402

__all__ = [
    "FID_WEIGHTS_FILE",
    "FID_WEIGHTS_URL",
    "WEIGHTS_ENV",
    "FEATURE_DIM",
    "NUM_CLASSES",
    "INPUT_SIZE",
    "InceptionOutput",
    "FIDInceptionV3",
    "build_fid_inception",
    "find_inception_weights",
    "load_inception",
    "to_inception_input",
    "inception_features",
]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_ENV = "REFINE_INCEPTION_WEIGHTS"
FEATURE_DIM = 2048
NUM_CLASSES = 1008
INPUT_SIZE = 299


class InceptionOutput(NamedTuple):
    features: torch.Tensor  # (B, 2048) pool3
    logits: torch.Tensor  # (B, 1008)


def build_fid_inception() -> Inception3:
    """The FID Inception architecture with freshly initialised weights (nothing is downloaded)."""
    net = Inception3(num_classes=NUM_CLASSES, aux_logits=False, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


# The layers of Inception3 from the input to pool3, in order (as pytorch-fid's blocks 0-3).
_TRUNK = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "maxpool1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "maxpool2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
    "avgpool",
)


class FIDInceptionV3(nn.Module):
    """pool3 features and logits of the FID Inception network.

    ``forward(x)`` takes images ``(B, 1 or 3, H, W)`` with values in [-1, 1] (use
    :func:`to_inception_input` to get there from another range); 1-channel images are repeated to
    3 channels and every image is resized to 299x299 (bilinear, ``align_corners=False``), as
    pytorch-fid does. Returns :class:`InceptionOutput` ``(features (B, 2048), logits (B, 1008))``.

    The logits are ``features @ fc.weight.T`` without the bias by default, as in the original
    Inception Score code (which multiplies pool3 by the weights of ``softmax/logits/MatMul``);
    ``logits_bias=True`` adds the bias.
    """

    def __init__(self, net: Inception3 | None = None, *, logits_bias: bool = False) -> None:
        super().__init__()
        self.net = net if net is not None else build_fid_inception()
        self.logits_bias = bool(logits_bias)

    def forward(self, x: torch.Tensor) -> InceptionOutput:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ShapeError(f"Inception expects images (B, 1 or 3, H, W), got shape {tuple(x.shape)}")
        if x.shape[0] and x.is_floating_point():
            lo, hi = float(x.amin()), float(x.amax())
            if lo < -1.01 or hi > 1.01:
                raise ConfigError(
                    f"Inception expects values in [-1, 1], found [{lo:.4g}, {hi:.4g}]; convert with "
                    "refine.metrics.inception.to_inception_input(x, value_range=(lo, hi))"
                )
        weight = self.net.fc.weight
        x = x.to(weight.dtype)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        for name in _TRUNK:
            x = getattr(self.net, name)(x)
        features = torch.flatten(x, 1)
        logits = F.linear(features, weight, self.net.fc.bias if self.logits_bias else None)
        return InceptionOutput(features, logits)


def _where_to_put() -> str:
    return (
        f"pass its path, set {WEIGHTS_ENV}=/path/to/{FID_WEIGHTS_FILE}, or put it in "
        f"{Path(torch.hub.get_dir()) / 'checkpoints'} (it is published at {FID_WEIGHTS_URL})"
    )


def find_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """Locate the FID Inception weights file without downloading anything.

    Looks at ``path`` (a file, or a directory holding the file), else ``$REFINE_INCEPTION_WEIGHTS``,
    else ``<torch hub dir>/checkpoints/`` (``$TORCH_HOME/hub`` by default). Raises
    :class:`~refine.errors.MissingWeightsError` with a one-line message when it is not found.
    """
    for source, value in (("path", path), (WEIGHTS_ENV, os.environ.get(WEIGHTS_ENV))):
        if value is None or value == "":
            continue
        p = Path(value).expanduser()
        if p.is_dir():
            p = p / FID_WEIGHTS_FILE
        if p.is_file():
            return p
        where = "the given path" if source == "path" else f"${WEIGHTS_ENV}"
        raise MissingWeightsError(
            f"FID Inception weights {FID_WEIGHTS_FILE} not found at {p} ({where}); {_where_to_put()}"
        )
    p = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE
    if p.is_file():
        return p
    raise MissingWeightsError(
        f"FID Inception weights {FID_WEIGHTS_FILE} not found (no path given, {WEIGHTS_ENV} unset, "
        f"not in the torch hub cache); {_where_to_put()}"
    )


def load_inception(
    path: str | os.PathLike | None = None, *, device: torch.device | str = "cpu", logits_bias: bool = False
) -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` with the FID weights (see :func:`find_inception_weights`).

    The returned network is in eval mode with gradients off, on ``device``.
    """
    p = find_inception_weights(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means an unusable file
        raise CheckpointError(
            f"cannot read Inception weights {p} ({type(e).__name__}: {e}); "
            f"replace it with a complete copy of {FID_WEIGHTS_FILE}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"Inception weights {p} hold a {type(state).__name__}, expected a state_dict")
    net = build_fid_inception()
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"Inception weights {p} do not fit the FID Inception network "
            f"(missing {len(missing)} keys e.g. {missing[:2]}, unexpected {len(unexpected)} e.g. "
            f"{unexpected[:2]}); expected {FID_WEIGHTS_FILE}"
        )
    model = FIDInceptionV3(net, logits_bias=logits_bias).eval().requires_grad_(False)
    return model.to(device)


def to_inception_input(images: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Map images with values in ``value_range`` (e.g. (0, 1), (-1, 1), (0, 255)) to [-1, 1].

    Values outside the declared range (beyond 0.1% of its width) are an error: they usually mean
    the wrong range was declared.
    """
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ConfigError(f"value_range must be (low, high) with high > low, got {value_range}")
    x = images if images.is_floating_point() else images.float()
    if x.numel():
        tol = 1e-3 * (hi - lo)
        found_lo, found_hi = float(x.amin()), float(x.amax())
        if found_lo < lo - tol or found_hi > hi + tol:
            raise ConfigError(
                f"images have values in [{found_lo:.4g}, {found_hi:.4g}] but value_range=({lo:g}, {hi:g}) "
                "was declared; declare the range the images are in (or clamp them)"
            )
    if (lo, hi) == (0.0, 1.0):
        return 2 * x - 1  # the same arithmetic as pytorch-fid's normalize_input
    return (x - lo) * (2.0 / (hi - lo)) - 1.0


def inception_features(
    net: nn.Module,
    images: Any,
    *,
    value_range: tuple[float, float],
    batch_size: int = 50,
    with_logits: bool = False,
    progress: bool = True,
    desc: str = "inception",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """pool3 features ``(N, 2048)`` (and logits ``(N, 1008)`` with ``with_logits``) of images.

    ``images``: a tensor ``(N, C, H, W)`` or an iterable of batches (see
    :func:`refine.metrics.features.iter_features`), with values in the declared ``value_range``.
    """
    return extract_features(
        net,
        images,
        batch_size=batch_size,
        transform=partial(to_inception_input, value_range=value_range),
        with_logits=with_logits,
        progress=progress,
        desc=desc,
    )
