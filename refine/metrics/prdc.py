"""Precision/recall on k-NN manifolds and density/coverage, on any feature arrays.

With ``r_i`` the distance from real point ``i`` to its k-th nearest other real point and ``s_j``
the same for fake point ``j`` among fakes:

- precision (Kynkäänniemi et al. 2019): fraction of fakes within ``r_i`` of some real ``i``;
- recall: fraction of reals within ``s_j`` of some fake ``j``;
- density (Naeem et al. 2020): ``1/(k M) * sum_j #{i : d(i, j) <= r_i}`` (can exceed 1);
- coverage: fraction of reals ``i`` whose nearest fake lies within ``r_i``.

A point on a ball's boundary counts as inside. Distances are computed in float64 with
``torch.cdist``, a chunk of rows at a time, on the device of ``real``; the real-to-fake distance
matrix is computed once for all four numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, NonFiniteError, ShapeError

__all__ = ["PRECISION", "RECALL", "DENSITY", "COVERAGE", "knn_radii", "prdc", "precision_recall", "density_coverage"]

PRECISION = "precision"
RECALL = "recall"
DENSITY = "density"
COVERAGE = "coverage"

# Default working-set size of one chunk of the distance matrix, in float64 elements (128 MiB).
_CHUNK_ELEMENTS = 1 << 24


def _features(x: Any, name: str, device: torch.device | None) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"{name} features must be a tensor or an array, got {type(x).__name__}")
    if x.dim() != 2:
        raise ShapeError(f"{name} features must be (N, D), got shape {tuple(x.shape)}")
    x = x.detach().to(device=device if device is not None else x.device, dtype=torch.float64)
    if not torch.isfinite(x).all():
        raise NonFiniteError(f"{name} features contain NaN or inf; check the feature network and its inputs")
    return x


def _chunk_rows(chunk_size: int | None, width: int) -> int:
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // max(width, 1))
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


def _check_k(k: int, n: int, name: str) -> None:
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    if n <= k:
        raise ShapeError(f"k={k} nearest neighbours need more than {k} {name} points, got {n}")


def knn_radii(features: Any, k: int = 3, *, chunk_size: int | None = None) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point, float64 ``(N,)``."""
    x = _features(features, "input", None)
    _check_k(k, x.shape[0], "input")
    return _radii(x, k, _chunk_rows(chunk_size, x.shape[0]))


def _radii(x: torch.Tensor, k: int, rows: int) -> torch.Tensor:
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for a in range(0, x.shape[0], rows):
        d = torch.cdist(x[a : a + rows], x)
        # The k+1 smallest include the point itself (distance 0).
        out[a : a + rows] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return out


def prdc(real: Any, fake: Any, *, k: int = 3, chunk_size: int | None = None) -> dict[str, float]:
    """``{precision, recall, density, coverage}`` of fake features against real ones.

    ``real`` ``(N, D)`` and ``fake`` ``(M, D)`` are tensors or arrays; both need more than ``k``
    points. ``chunk_size`` is the number of rows per distance chunk (default: about 2^24 float64
    elements per chunk).
    """
    r = _features(real, "real", None)
    f = _features(fake, "fake", r.device)
    if r.shape[1] != f.shape[1]:
        raise ShapeError(f"real and fake features have different dimensions: {r.shape[1]} and {f.shape[1]}")
    _check_k(k, r.shape[0], "real")
    _check_k(k, f.shape[0], "fake")
    rows = _chunk_rows(chunk_size, max(r.shape[0], f.shape[0]))
    real_r = _radii(r, k, rows)
    fake_r = _radii(f, k, rows)

    fake_on_real = torch.zeros(f.shape[0], dtype=torch.bool, device=r.device)  # precision
    real_on_fake = torch.zeros(r.shape[0], dtype=torch.bool, device=r.device)  # recall
    real_covered = torch.zeros(r.shape[0], dtype=torch.bool, device=r.device)  # coverage
    density_count = torch.zeros((), dtype=torch.float64, device=r.device)
    for a in range(0, r.shape[0], rows):
        d = torch.cdist(r[a : a + rows], f)  # (rows, M)
        inside_real = d <= real_r[a : a + rows, None]
        fake_on_real |= inside_real.any(dim=0)
        density_count += inside_real.sum(dtype=torch.float64)
        real_on_fake[a : a + rows] = (d <= fake_r[None, :]).any(dim=1)
        real_covered[a : a + rows] = inside_real.any(dim=1)  # nearest fake within r_i
    return {
        PRECISION: float(fake_on_real.double().mean()),
        RECALL: float(real_on_fake.double().mean()),
        DENSITY: float(density_count / (k * f.shape[0])),
        COVERAGE: float(real_covered.double().mean()),
    }


def precision_recall(real: Any, fake: Any, *, k: int = 3, chunk_size: int | None = None) -> dict[str, float]:
    """``{precision, recall}`` (Kynkäänniemi et al. 2019); see :func:`prdc`."""
    out = prdc(real, fake, k=k, chunk_size=chunk_size)
    return {PRECISION: out[PRECISION], RECALL: out[RECALL]}


def density_coverage(real: Any, fake: Any, *, k: int = 3, chunk_size: int | None = None) -> dict[str, float]:
    """``{density, coverage}`` (Naeem et al. 2020); see :func:`prdc`."""
    out = prdc(real, fake, k=k, chunk_size=chunk_size)
    return {DENSITY: out[DENSITY], COVERAGE: out[COVERAGE]}
