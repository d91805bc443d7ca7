"""Kernel Inception Distance: the unbiased MMD² between feature sets under a cubic polynomial kernel.

KID (Bińkowski et al., 2018, "Demystifying MMD GANs") compares two feature sets with the kernel

    k(x, y) = (gamma * <x, y> + coef0) ** degree,   gamma = 1 / D, coef0 = 1, degree = 3

and the unbiased estimator of the squared maximum mean discrepancy,

    MMD²_u = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (m (m-1))
             - 2 sum_{i, j} k(x_i, y_j) / m²,

on ``subsets`` random subsets of ``subset_size`` rows drawn without replacement from each set;
the result is the mean and the (population, ``ddof=0``) standard deviation over subsets. These
are the definitions and defaults of the paper's code and of torch-fidelity
(``kid_subsets=100``, ``kid_subset_size=1000``), so the two agree on the same features and the
same subsets. Unlike the Fréchet distance, the estimator is unbiased in the number of samples,
which is why it is preferred when there are fewer samples than feature dimensions; it can be
slightly negative when the two sets come from the same distribution.

The subsets are drawn from a ``torch.Generator`` (seed :data:`KID_SEED` unless one is given),
never from a global random state, so a result is reproducible from its record. Everything is
computed in float64; memory is three ``subset_size x subset_size`` kernel matrices at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, NonFiniteError, ShapeError
from ..validate import as_float, as_int, as_rng

__all__ = ["KID_SEED", "KID_SUBSETS", "KID_SUBSET_SIZE", "polynomial_kernel", "mmd2_unbiased", "kid"]

KID_SEED = 0
"""Seed of the subset draws when no generator is given."""
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def _as_features(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ShapeError(f"{name} must be features (N, D), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise NonFiniteError(f"{name} contain NaN or inf; check the feature network and its inputs")
    return a


def polynomial_kernel(
    x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> np.ndarray:
    """``(gamma * x @ y.T + coef0) ** degree``; ``gamma`` defaults to ``1 / D``."""
    g = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * g + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD² from the three ``m x m`` kernel matrices (diagonals of ``k_xx``, ``k_yy`` left out)."""
    m = k_xx.shape[0]
    if m < 2 or k_xx.shape != (m, m) or k_xy.shape != (m, m) or k_yy.shape != (m, m):
        raise ShapeError(
            f"MMD² needs three square kernel matrices of one size >= 2, got {k_xx.shape}, {k_xy.shape}, {k_yy.shape}"
        )
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid(
    real: Any,
    fake: Any,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    rng: torch.Generator | None = None,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> tuple[float, float, int]:
    """``(mean, std, m)`` of the unbiased MMD² between ``real`` and ``fake`` features over random subsets.

    ``real`` ``(N1, D)`` and ``fake`` ``(N2, D)``: arrays or tensors. Each of the ``subsets``
    draws takes ``m = min(subset_size, N1, N2)`` rows of each set without replacement (the size
    actually used is returned, so that a record can say it); ``rng`` (a ``torch.Generator``)
    makes the draws reproducible and defaults to one seeded with :data:`KID_SEED`.
    """
    x, y = _as_features(real, "real features"), _as_features(fake, "sample features")
    if x.shape[1] != y.shape[1]:
        raise ShapeError(f"real and sample features have different dimensions: {x.shape[1]} and {y.shape[1]}")
    subsets = as_int(subsets, "KID subsets", minimum=1)
    subset_size = as_int(subset_size, "KID subset size", minimum=2)
    degree = as_int(degree, "KID kernel degree", minimum=1)
    coef0 = as_float(coef0, "KID kernel coef0")
    if gamma is not None:
        gamma = as_float(gamma, "KID kernel gamma", minimum=0.0, open_min=True)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ConfigError(f"KID needs at least 2 real and 2 sample feature vectors, got {len(x)} and {len(y)}")
    gen = as_rng(rng) or torch.Generator().manual_seed(KID_SEED)
    values = np.empty(subsets)
    for i in range(subsets):
        a = x[torch.randperm(len(x), generator=gen)[:m].numpy()]
        b = y[torch.randperm(len(y), generator=gen)[:m].numpy()]
        kern = lambda p, q: polynomial_kernel(p, q, degree=degree, gamma=gamma, coef0=coef0)  # noqa: E731
        values[i] = mmd2_unbiased(kern(a, a), kern(a, b), kern(b, b))
    return float(values.mean()), float(values.std()), m
