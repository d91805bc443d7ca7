"""KID: the unbiased MMD² estimator against torch-fidelity's on identical features, its seeding, its unbiasedness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refine._compat import ensure_torchvision
from refine.errors import ConfigError, NonFiniteError, ShapeError
from refine.metrics.kid import KID_SEED, kid, mmd2_unbiased, polynomial_kernel

ensure_torchvision()
metric_kid = pytest.importorskip("torch_fidelity.metric_kid")  # the `test` extra installs torch-fidelity

KERNEL = {"kid_kernel": "poly", "kid_kernel_poly_degree": 3, "kid_kernel_poly_gamma": None, "kid_kernel_poly_coef0": 1}


def _feats(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    scale = np.random.default_rng(12345).uniform(
        0.5, 2.0, d
    )  # one distribution per (d, shift); the seed draws the rows
    return np.random.default_rng(seed).standard_normal((n, d)) * scale + shift


def _ours(a: np.ndarray, b: np.ndarray) -> float:
    return mmd2_unbiased(polynomial_kernel(a, a), polynomial_kernel(a, b), polynomial_kernel(b, b))


def test_mmd2_equals_torch_fidelity_on_the_same_features():
    a, b = _feats(120, 16, 0), _feats(120, 16, 1, shift=0.3)
    theirs = float(metric_kid.kernel_mmd(a, b, **KERNEL))
    assert theirs > 0 and _ours(a, b) == pytest.approx(theirs, rel=1e-12)


def test_kid_equals_torch_fidelity_when_each_subset_is_the_whole_set():
    """With subset size = N every subset is a permutation of all rows, so both implementations see the same sets."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    a, b = _feats(80, 8, 2), _feats(80, 8, 3, shift=0.5)
    theirs = kid_features_to_metric(
        torch.from_numpy(a), torch.from_numpy(b), kid_subsets=3, kid_subset_size=80, verbose=False, rng_seed=0, **KERNEL
    )
    mean, std, m = kid(a, b, subsets=3, subset_size=80)
    assert m == 80 and mean > 0
    assert mean == pytest.approx(theirs[KEY_METRIC_KID_MEAN], rel=1e-10)
    assert std <= 1e-10 * mean and theirs[KEY_METRIC_KID_STD] <= 1e-10 * mean  # the same value on every subset


def test_kid_over_subsets_is_the_mean_and_population_std_of_torch_fidelitys_mmd2_on_those_subsets():
    a, b = _feats(300, 12, 4), _feats(250, 12, 5, shift=0.2)
    mean, std, m = kid(a, b, subsets=7, subset_size=50, rng=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)  # the same draws, in the same order
    values = []
    for _ in range(7):
        i, j = torch.randperm(300, generator=g)[:50].numpy(), torch.randperm(250, generator=g)[:50].numpy()
        values.append(float(metric_kid.kernel_mmd(a[i], b[j], **KERNEL)))
    assert m == 50
    assert mean == pytest.approx(np.mean(values), rel=1e-12) and std == pytest.approx(np.std(values), rel=1e-10)


def test_seeded_and_reproducible():
    a, b = _feats(200, 6, 6), _feats(200, 6, 7, shift=0.1)
    first = kid(a, b, subsets=5, subset_size=40)
    assert kid(a, b, subsets=5, subset_size=40) == first  # default generator: seed KID_SEED
    assert kid(a, b, subsets=5, subset_size=40, rng=torch.Generator().manual_seed(KID_SEED)) == first
    assert kid(a, b, subsets=5, subset_size=40, rng=torch.Generator().manual_seed(1)) != first
    state = torch.random.get_rng_state()
    kid(a, b, subsets=2, subset_size=40)
    assert torch.equal(state, torch.random.get_rng_state())  # the global generator is not touched


def test_subset_size_is_capped_at_the_smaller_set_and_reported():
    mean, std, m = kid(_feats(30, 4, 8), _feats(20, 4, 9), subsets=4, subset_size=1000)
    assert m == 20 and np.isfinite(mean) and np.isfinite(std)


def test_unbiased_near_zero_for_one_distribution_and_positive_for_two():
    """Independent data sets per draw (one subset of all N rows each): the S estimates are i.i.d. with mean exactly 0 when
    both sets come from one distribution, so their average lies within 4 standard errors of 0; a mean shift of
    0.5 in every dimension puts it far above that."""
    s, n, d = 40, 60, 8
    same = np.array([kid(_feats(n, d, 100 + i), _feats(n, d, 200 + i), subsets=1, subset_size=n)[0] for i in range(s)])
    se = same.std(ddof=1) / np.sqrt(s)
    assert abs(same.mean()) <= 4 * se
    assert (same < 0).any()  # an unbiased estimate of 0 is negative about half the time
    shifted = np.array(
        [kid(_feats(n, d, 300 + i), _feats(n, d, 400 + i, shift=0.5), subsets=1, subset_size=n)[0] for i in range(s)]
    )
    assert shifted.mean() > 4 * se + 4 * shifted.std(ddof=1) / np.sqrt(s)


def test_errors():
    a = _feats(10, 4, 0)
    with pytest.raises(ShapeError, match="different dimensions"):
        kid(a, _feats(10, 5, 1))
    with pytest.raises(ShapeError, match=r"\(N, D\)"):
        kid(a[0], a)
    bad = a.copy()
    bad[3, 1] = np.nan
    with pytest.raises(NonFiniteError):
        kid(a, bad)
    with pytest.raises(ConfigError, match="torch.Generator"):
        kid(a, a, rng=3)
    with pytest.raises(ConfigError, match="at least 2"):
        kid(a[:1], a)
    with pytest.raises(ConfigError, match="subsets"):
        kid(a, a, subsets=0)
