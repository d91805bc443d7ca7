"""Precision/recall (k-NN manifolds) and density/coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refine.errors import ConfigError, NonFiniteError, ShapeError
from refine.metrics.prdc import (
    COVERAGE,
    DENSITY,
    PRECISION,
    RECALL,
    density_coverage,
    knn_radii,
    prdc,
    precision_recall,
)


def _cloud(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


def _reference(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Direct transcription of the definitions with full distance matrices."""

    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    rr, ff, rf = dist(real, real), dist(fake, fake), dist(real, fake)
    r_real = np.sort(rr, axis=1)[:, k]  # column 0 is the point itself
    r_fake = np.sort(ff, axis=1)[:, k]
    inside = rf <= r_real[:, None]
    return {
        PRECISION: inside.any(axis=0).mean(),
        RECALL: (rf <= r_fake[None, :]).any(axis=1).mean(),
        DENSITY: inside.sum() / (k * len(fake)),
        COVERAGE: (rf.min(axis=1) <= r_real).mean(),
    }


def test_result_keys_are_stable():
    assert (PRECISION, RECALL, DENSITY, COVERAGE) == ("precision", "recall", "density", "coverage")


def test_identical_clouds():
    x = _cloud(300, 8, seed=0)
    out = prdc(x, x.clone(), k=3, chunk_size=64)
    assert out[PRECISION] == 1.0 and out[RECALL] == 1.0 and out[COVERAGE] == 1.0
    # Each real ball holds exactly its own point and its k neighbours (no ties in continuous data).
    assert out[DENSITY] == pytest.approx(4 / 3, abs=1e-12)


def test_disjoint_far_apart_clouds():
    real, fake = _cloud(200, 8, seed=1), _cloud(150, 8, seed=2, shift=100.0)
    # Radii are a few units; the clouds are 100 * sqrt(8) apart.
    assert prdc(real, fake) == {PRECISION: 0.0, RECALL: 0.0, DENSITY: 0.0, COVERAGE: 0.0}


@pytest.mark.parametrize("k,chunk_size", [(3, None), (3, 13), (1, 37), (5, 1)])
def test_matches_definition(k, chunk_size):
    real = _cloud(120, 6, seed=3)
    fake = _cloud(90, 6, seed=4, shift=0.7) * 1.3  # partly overlapping, different spread
    got = prdc(real.numpy(), fake.float(), k=k, chunk_size=chunk_size)
    want = _reference(real.numpy(), fake.float().double().numpy(), k)
    assert 0.0 < want[PRECISION] < 1.0 and 0.0 < want[RECALL] < 1.0  # a non-trivial case
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_subsets_and_helpers():
    real = _cloud(200, 4, seed=5)
    mode = real[real[:, 0] > 0.5]  # fakes cover only part of the real support
    pr = precision_recall(real, mode)
    dc = density_coverage(real, mode)
    assert pr[PRECISION] == 1.0  # every fake is a real point
    assert pr[RECALL] < 0.6 and dc[COVERAGE] < 0.6  # but most of the real support is missed
    assert set(pr) == {PRECISION, RECALL} and set(dc) == {DENSITY, COVERAGE}
    radii = knn_radii(real, k=2, chunk_size=17)
    d = torch.cdist(real, real)
    assert torch.allclose(radii, d.sort(dim=1).values[:, 2], atol=1e-12)


def test_errors():
    x = _cloud(10, 3, seed=6)
    with pytest.raises(ShapeError, match="different dimensions"):
        prdc(x, _cloud(10, 4, seed=7))
    with pytest.raises(ShapeError, match="more than 3 fake"):
        prdc(x, x[:3])
    with pytest.raises(ConfigError, match="k must be"):
        prdc(x, x, k=0)
    with pytest.raises(ShapeError, match=r"\(N, D\)"):
        prdc(x[0], x)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(NonFiniteError, match="fake"):
        prdc(x, bad)
