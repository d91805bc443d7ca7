"""DRE-F-SP: density-ratio estimation in a feature space with the Softplus loss (Ding, Wang & Welch 2020): the model.

A feature network ``phi`` (frozen) and a ratio head ``h`` (an MLP whose output ``r = a(t) >= 0``,
``a`` = softplus or ReLU) give ``log r(x) = log a(h(phi(x)))``: a :class:`FeatureRatio`, exposed
through the same protocol as a discriminator ratio. With ``activation="softplus"`` (the default
here) ``log r`` is finite and smooth everywhere, so gradient samplers can use it; ``"relu"``
(Ding et al.'s choice) gives exact zeros, floored at ``log(1e-12)``. The head is trained with the
SP loss :func:`sp_loss`

    L(r) = mean(sigmoid(r_f) * r_f) - mean(softplus(r_f)) - mean(sigmoid(r_r)) + lambda * (mean(r_f) - 1)^2.

Pointwise, ``q (sigmoid(r) r - softplus(r)) - p sigmoid(r)`` has derivative
``sigmoid'(r) (q r - p)``, which vanishes only at ``r = p / q``: the minimiser of the population
loss (lambda = 0) is the true ratio; the penalty pushes ``E_G[r]`` to 1, which the true ratio
satisfies. Fitting (the feature network, the heads, the choice of lambda) is
:mod:`refine.ratio.fit_feature`; ratio files (kind ``"feature-sp"``) are written and read by
:mod:`refine.io.checkpoints`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError
from ..nets import register_arch
from .base import check_log_ratio

__all__ = ["sp_loss", "RatioHead", "FeatureRatio", "ACTIVATIONS", "DEFAULT_LAMBDAS"]

ACTIVATIONS = ("softplus", "relu")
DEFAULT_LAMBDAS = (0.0, 0.01, 0.1, 1.0)
_RELU_FLOOR = 1e-12
_LOG_SOFTPLUS_CUT = -15.0


def sp_loss(r_real: torch.Tensor, r_fake: torch.Tensor, lam: float = 0.0) -> torch.Tensor:
    """The Softplus (SP) loss of DRE-F-SP on ratio values (not logs) of real and generated samples."""
    loss = (torch.sigmoid(r_fake) * r_fake).mean() - F.softplus(r_fake).mean() - torch.sigmoid(r_real).mean()
    if lam:
        loss = loss + lam * (r_fake.mean() - 1.0) ** 2
    return loss


def _activate(t: torch.Tensor, activation: str) -> torch.Tensor:
    return F.softplus(t) if activation == "softplus" else F.relu(t)


def _log_activate(t: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "softplus":
        # log softplus(t) ~ t for t << 0; clamping first keeps the unused branch finite (no 0 * inf in the gradient).
        return torch.where(t > _LOG_SOFTPLUS_CUT, torch.log(F.softplus(t.clamp_min(_LOG_SOFTPLUS_CUT))), t)
    return torch.log(t.clamp_min(_RELU_FLOOR))


class RatioHead(nn.Module):
    """MLP ``in_dim -> hidden... -> 1`` (ReLU, optional dropout) giving the pre-activation ``t``."""

    def __init__(self, in_dim: int = 256, hidden=(512, 256), dropout: float = 0.0) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if in_dim < 1 or any(h < 1 for h in hidden) or not 0.0 <= dropout < 1.0:
            raise ConfigError(
                f"ratio head needs positive sizes and dropout in [0, 1); got in_dim={in_dim}, hidden={hidden}, dropout={dropout}"
            )
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            if dropout:
                layers += [nn.Dropout(dropout)]
            d = h
        layers += [nn.Linear(d, 1)]
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if f.dim() != 2 or f.shape[1] != self.in_dim:
            raise ShapeError(f"the ratio head takes features (N, {self.in_dim}); got {tuple(f.shape)}")
        return self.net(f)[:, 0]


@register_arch("ratio-head")
def ratio_head(in_dim: int = 256, hidden=(512, 256), dropout: float = 0.0) -> RatioHead:
    """The DRE-F-SP ratio head (an MLP to one pre-activation per feature vector)."""
    return RatioHead(in_dim, tuple(hidden), dropout)


class FeatureRatio:
    """``log r(x) = log a(head(phi(x)))``: a DRE-F-SP density ratio (see the module docs).

    ``image_size``: the size the feature network was trained on; other sizes are resized
    (bilinear) before it. Both networks should be in eval mode (the loader does that).
    """

    def __init__(
        self,
        feature_net: nn.Module,
        head: nn.Module,
        *,
        activation: str = "softplus",
        image_size: int | None = None,
        differentiable: bool = True,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown ratio activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if not hasattr(feature_net, "features"):
            raise ConfigError(f"the feature network must have a features(x) method, got {type(feature_net).__name__}")
        self.feature_net = feature_net
        self.head = head
        self.activation = activation
        self.image_size = image_size
        self.differentiable = differentiable

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ShapeError(f"DRE-F-SP takes images (N, C, H, W); got shape {tuple(x.shape)}")
        if self.image_size is not None and (x.shape[-1] != self.image_size or x.shape[-2] != self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
            )
        return self.feature_net.features(x)

    def ratio_from_features(self, f: torch.Tensor) -> torch.Tensor:
        return _activate(self.head(f), self.activation)

    def log_ratio_from_features(self, f: torch.Tensor) -> torch.Tensor:
        return _log_activate(self.head(f), self.activation)

    def ratio(self, x: torch.Tensor) -> torch.Tensor:
        """``r(x)`` itself (non-negative)."""
        return self.ratio_from_features(self.features(x))

    def log_ratio(self, x: torch.Tensor) -> torch.Tensor:
        return check_log_ratio(self.log_ratio_from_features(self.features(x)), x.shape[0], "DRE-F-SP ratio")

    def __repr__(self) -> str:
        return f"FeatureRatio({type(self.feature_net).__name__}, {type(self.head).__name__}, activation={self.activation!r})"


# --------------------------------------------------------------------------- helpers
