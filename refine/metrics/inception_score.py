"""Inception Score (Salimans et al. 2016) from classifier logits.

    IS = exp( E_x KL( p(y|x) || p(y) ) ),   p(y) = E_x p(y|x)

computed on each of ``splits`` disjoint parts of the samples; the result is the mean and the
(population) standard deviation over parts, as in the original code. Part ``k`` holds rows
``[k N // splits, (k+1) N // splits)``, so every sample is used. With a ``rng``, rows are
shuffled first (a fixed ``torch.Generator`` seed gives a reproducible split); without one, the
given order is kept.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, NonFiniteError, ShapeError

__all__ = ["IS_MEAN", "IS_STD", "inception_score"]

IS_MEAN = "is_mean"
"""Result key of the Inception Score's mean over splits."""
IS_STD = "is_std"
"""Result key of the Inception Score's standard deviation over splits."""


def inception_score(logits: Any, *, splits: int = 10, rng: torch.Generator | None = None) -> tuple[float, float]:
    """``(mean, std)`` of the Inception Score of logits ``(N, C)`` (softmax is applied here).

    Computed in float64. Use the 1008-way logits of
    :class:`refine.metrics.inception.FIDInceptionV3` for the standard score.
    """
    if isinstance(logits, np.ndarray):
        logits = torch.from_numpy(logits)
    if not isinstance(logits, torch.Tensor):
        raise ConfigError(f"logits must be a tensor or an array, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ShapeError(f"logits must be (N, C) with C >= 2 classes, got shape {tuple(logits.shape)}")
    n = logits.shape[0]
    if not isinstance(splits, int) or splits < 1:
        raise ConfigError(f"splits must be a positive integer, got {splits!r}")
    if n < splits:
        raise ShapeError(f"the Inception Score with {splits} splits needs at least {splits} samples, got {n}")
    x = logits.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise NonFiniteError("logits contain NaN or inf; check the classifier and its inputs")
    if rng is not None:
        x = x[torch.randperm(n, generator=rng, device=rng.device).to("cpu")]
    log_p = torch.log_softmax(x, dim=1)
    scores = []
    for k in range(splits):
        part = log_p[k * n // splits : (k + 1) * n // splits]
        log_py = torch.logsumexp(part, dim=0) - math.log(part.shape[0])  # log of the mean of p(y|x)
        kl = (part.exp() * (part - log_py)).sum(dim=1).mean()
        scores.append(math.exp(float(kl)))
    s = np.asarray(scores)
    return float(s.mean()), float(s.std())
