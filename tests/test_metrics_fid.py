"""Fréchet distance, feature statistics, .npz statistics files and the statistics cache."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from refine._compat import ensure_torchvision
from refine.errors import ConfigError, DataError, NonFiniteError, ShapeError
from refine.metrics.fid import (
    CACHE_ENV,
    FID,
    StatisticsCache,
    StatsAccumulator,
    default_cache_dir,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    load_statistics,
    load_statistics_meta,
    save_statistics,
)

ensure_torchvision()
from pytorch_fid.fid_score import calculate_frechet_distance, compute_statistics_of_path  # noqa: E402

EPS = np.finfo(np.float64).eps


def _features(n: int, d: int, seed: int, shift: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Correlated, unequally scaled features with a non-zero mean.
    mix = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    return (rng.standard_normal((n, d)) * rng.uniform(0.2, 3.0, d)) @ mix + shift


def _rounding_bound(*sigmas: np.ndarray) -> float:
    """Float64 error allowance for the trace terms: symmetric eigensolvers and the SVD are backward
    stable, so each of the D computed eigen/singular values is off by at most c * D * eps * ||S||;
    summing D of them and allowing c = 100 gives 100 * D^2 * eps * max ||S||."""
    d = sigmas[0].shape[0]
    return 100 * d * d * EPS * max(np.linalg.norm(s, 2) for s in sigmas)


def test_result_key_is_stable():
    assert FID == "fid"


# --------------------------------------------------------------------------- distance


@pytest.mark.parametrize("n,d", [(400, 32), (20, 64)], ids=["full-rank", "rank-deficient"])
def test_distance_of_statistics_to_themselves_is_zero(n, d):
    mu, sigma = feature_statistics(_features(n, d, seed=0))
    value = frechet_distance(mu, sigma, mu, sigma)
    assert 0.0 <= value <= _rounding_bound(sigma)


def test_rank_deficient_self_distance_is_far_below_the_sqrt_eps_error_of_a_matrix_square_root():
    # With 20 samples in 64 dimensions, 44 eigenvalues of sigma are zero; rounding puts them near
    # eps * ||S||, and their square roots near sqrt(eps * ||S||) ~ 1e-7: a method that takes square
    # roots of the eigenvalues of sqrt(S1) S2 sqrt(S1) would report about 44 * 2e-8 * ||S|| here.
    mu, sigma = feature_statistics(_features(20, 64, seed=1))
    assert frechet_distance(mu, sigma, mu, sigma) < 1e-3 * np.sqrt(EPS) * np.linalg.norm(sigma, 2)


def test_closed_form_for_commuting_covariances():
    # Same eigenvectors Q: sqrt(S1) S2 sqrt(S1) = Q diag(a b) Q^T, so
    # d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    rng = np.random.default_rng(2)
    d = 24
    a, b = rng.uniform(0.01, 5.0, d), rng.uniform(0.01, 5.0, d)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def _pytorch_fid_formula(mu1, s1, mu2, s2) -> float:
    """pytorch-fid's calculate_frechet_distance without its ``sqrtm(..., disp=False)`` call, which newer SciPy
    releases reject: the same formula, ``|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrtm(S1 S2)``, real part taken as there."""
    from scipy import linalg

    covmean = linalg.sqrtm(s1.dot(s2))
    if isinstance(covmean, tuple):  # a SciPy that still returns (sqrtm, error estimate)
        covmean = covmean[0]
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(covmean)))


def test_agrees_with_pytorch_fid_and_torch_fidelity_on_well_conditioned_statistics():
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    mu1, s1 = feature_statistics(_features(500, 32, seed=3))
    mu2, s2 = feature_statistics(_features(500, 32, seed=4, shift=0.8))
    ours = frechet_distance(mu1, s1, mu2, s2)
    formula = _pytorch_fid_formula(mu1, s1, mu2, s2)
    fidelity = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, verbose=False)[
        "frechet_inception_distance"
    ]
    assert formula > 1.0  # a non-trivial distance
    assert ours == pytest.approx(formula, rel=1e-9) and ours == pytest.approx(fidelity, rel=1e-9)


def test_agrees_with_pytorch_fids_own_function_where_scipy_accepts_it():
    mu1, s1 = feature_statistics(_features(500, 32, seed=3))
    mu2, s2 = feature_statistics(_features(500, 32, seed=4, shift=0.8))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # scipy's sqrtm(disp=...) inside pytorch-fid
            theirs = float(calculate_frechet_distance(mu1, s1, mu2, s2))
    except TypeError as e:  # SciPy >= 1.18 removed sqrtm's disp argument; the formula test above covers this case
        pytest.skip(f"this SciPy rejects pytorch-fid's sqrtm(..., disp=False): {e}")
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(theirs, rel=1e-9)


def test_same_features_same_number_as_pytorch_fid_and_torch_fidelity_statistics():
    """From identical feature arrays: refine's statistics equal pytorch-fid's (np.mean, np.cov(rowvar=False), as in
    calculate_activation_statistics) and torch-fidelity's fid_features_to_statistics, and the distances agree."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    a, b = _features(600, 24, seed=21), _features(400, 24, seed=22, shift=0.7)
    for feats in (a, b):
        mu, sigma = feature_statistics(torch.from_numpy(feats))
        tf = fid_features_to_statistics(torch.from_numpy(feats))
        np.testing.assert_allclose(mu, np.mean(feats, axis=0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(sigma, tf["sigma"], rtol=1e-10, atol=1e-12)
    ours = fid_from_features(a, b)
    pf = _pytorch_fid_formula(np.mean(a, 0), np.cov(a, rowvar=False), np.mean(b, 0), np.cov(b, rowvar=False))
    tf = fid_statistics_to_metric(
        fid_features_to_statistics(torch.from_numpy(a)), fid_features_to_statistics(torch.from_numpy(b)), verbose=False
    )["frechet_inception_distance"]
    assert ours > 1.0 and ours == pytest.approx(pf, rel=1e-9) and ours == pytest.approx(tf, rel=1e-9)


def test_symmetric_and_accepts_tensors():
    mu1, s1 = feature_statistics(_features(300, 16, seed=5))
    mu2, s2 = feature_statistics(_features(300, 16, seed=6, shift=0.0))
    ab = frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ab, rel=1e-10)
    t = [torch.from_numpy(v).float() for v in (mu1, s1, mu2, s2)]
    assert frechet_distance(*t) == pytest.approx(ab, rel=1e-4)  # float32 inputs


def test_does_not_depend_on_sample_order():
    x, y = _features(300, 16, seed=7), _features(200, 16, seed=8, shift=1.0)
    perm = np.random.default_rng(9).permutation(len(x))
    a = fid_from_features(x, y)
    assert a > 1.0
    # Summation order changes only rounding: relative 1e-10 is far above n * eps.
    assert fid_from_features(x[perm], y) == pytest.approx(a, rel=1e-10)
    mu, s = feature_statistics(x)
    mu_p, s_p = feature_statistics(x[perm])
    assert frechet_distance(mu, s, mu_p, s_p) <= _rounding_bound(s) + 1e-10 * np.trace(s)


def test_input_errors():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ShapeError, match="different dimensions"):
        frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ShapeError, match="sigma1"):
        frechet_distance(mu, np.eye(4), mu, s)
    with pytest.raises(NonFiniteError):
        frechet_distance(np.array([0.0, np.nan, 0.0]), s, mu, s)
    with pytest.raises(ConfigError, match="positive semi-definite"):
        frechet_distance(mu, np.diag([1.0, -0.5, 1.0]), mu, s)
    with pytest.raises(ShapeError, match="not symmetric"):
        frechet_distance(mu, s + np.triu(np.ones((3, 3)), 1), mu, s)


# --------------------------------------------------------------------------- statistics


def test_statistics_match_numpy():
    x = _features(257, 12, seed=10, shift=50.0)
    mu, sigma = feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    assert np.array_equal(sigma, sigma.T)


def test_chunked_and_merged_equal_one_shot():
    x = _features(1000, 20, seed=11, shift=3.0)
    mu, sigma = feature_statistics(x, chunk_size=10_000)
    acc = StatsAccumulator(chunk_size=64)
    for piece in np.array_split(x, [1, 3, 250, 251, 700]):  # uneven, including 1-row chunks
        acc.update(torch.from_numpy(piece))
    a, b = StatsAccumulator().update(x[:333]), StatsAccumulator().update(x[333:])
    merged = StatsAccumulator.from_state_dict(a.state_dict()).merge(b)
    for got_mu, got_sigma in (acc.compute(), merged.compute(), feature_statistics(iter(np.array_split(x, 7)))):
        np.testing.assert_allclose(got_mu, mu, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got_sigma, sigma, rtol=1e-10, atol=1e-12)
    assert merged.count == acc.count == 1000


def test_accumulator_errors():
    acc = StatsAccumulator().update(np.ones((1, 4)))
    with pytest.raises(ShapeError, match="at least 2"):
        acc.compute()
    with pytest.raises(ShapeError, match="dimension"):
        acc.update(np.ones((3, 5)))
    with pytest.raises(ShapeError, match=r"\(N, D\)"):
        StatsAccumulator().update(torch.ones(2, 3, 4))
    bad = np.ones((5, 4))
    bad[3, 2] = np.inf
    with pytest.raises(NonFiniteError, match="rows 0..4"):
        StatsAccumulator().update(bad)


# --------------------------------------------------------------------------- .npz files


def test_npz_readable_by_pytorch_fid(tmp_path):
    mu, sigma = feature_statistics(_features(100, 8, seed=12))
    path = save_statistics(tmp_path / "ours.npz", mu, sigma, meta={"n": 100})
    theirs_mu, theirs_sigma = compute_statistics_of_path(str(path), None, 50, 8, "cpu")
    np.testing.assert_array_equal(theirs_mu, mu)
    np.testing.assert_array_equal(theirs_sigma, sigma)
    assert load_statistics_meta(path) == {"n": 100}
    assert [p.name for p in tmp_path.iterdir()] == ["ours.npz"]  # no temporary left behind


def test_npz_written_like_pytorch_fid_loads(tmp_path):
    # pytorch-fid's --save-stats: np.savez_compressed(path, mu=mu, sigma=sigma) of float64 arrays.
    mu, sigma = feature_statistics(_features(100, 8, seed=13))
    path = tmp_path / "theirs.npz"
    np.savez_compressed(path, mu=mu, sigma=sigma)
    got_mu, got_sigma = load_statistics(path)
    np.testing.assert_array_equal(got_mu, mu)
    np.testing.assert_array_equal(got_sigma, sigma)
    assert load_statistics_meta(path) == {}
    np.savez_compressed(path, mu=mu.astype(np.float32), sigma=sigma.astype(np.float32))
    assert load_statistics(path)[1].dtype == np.float64


def test_npz_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"\.npz"):
        save_statistics(tmp_path / "stats.npy", np.zeros(2), np.eye(2))
    with pytest.raises(DataError, match="does not exist"):
        load_statistics(tmp_path / "absent.npz")
    np.savez(tmp_path / "wrong.npz", mean=np.zeros(2))
    with pytest.raises(DataError, match="lacks mu, sigma.*found keys: mean"):
        load_statistics(tmp_path / "wrong.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        load_statistics(tmp_path / "junk.npz")


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_statistics(tmp_path / "s.npz", np.zeros(2), np.eye(2))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        save_statistics(path, np.ones(2), 2 * np.eye(2))
    monkeypatch.undo()
    mu, sigma = load_statistics(path)
    assert np.array_equal(mu, np.zeros(2)) and np.array_equal(sigma, np.eye(2))
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


# --------------------------------------------------------------------------- cache


def test_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert StatisticsCache().root == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "refine"


def test_cache_dir_follows_xdg_cache_home_as_torch_hub_does(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "refine"
    assert Path(torch.hub.get_dir()) == tmp_path / "xdg" / "torch" / "hub"  # the convention followed
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "refine"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"  # $REFINE_CACHE first, as $TORCH_HOME is for torch.hub


def test_cache_keys_separate_every_field(tmp_path):
    cache = StatisticsCache(tmp_path)
    base = ("cifar10", "train", {"size": 32, "range": [0, 1]}, "inception-fid")
    keys = {
        cache.key(*base),
        cache.key("mnist", *base[1:]),
        cache.key(base[0], "test", *base[2:]),
        cache.key(*base[:2], {"size": 64, "range": [0, 1]}, base[3]),
        cache.key(*base[:3], "resnet34"),
    }
    assert len(keys) == 5
    # Mapping order does not matter.
    assert cache.key(*base[:2], {"range": [0, 1], "size": 32}, base[3]) == cache.key(*base)
    with pytest.raises(ConfigError, match="dataset"):
        cache.key("", "train", "x", "net")
    with pytest.raises(ConfigError, match="JSON"):
        cache.key("d", "train", {"f": object()}, "net")


def test_cache_computes_once_then_loads(tmp_path):
    cache = StatisticsCache(tmp_path)
    mu, sigma = feature_statistics(_features(50, 4, seed=14))
    calls = []

    def compute():
        calls.append(1)
        return mu, sigma

    key = ("mnist", "train", "28px,[0,1]", "inception-fid")
    assert cache.load(*key) is None
    first = cache.get_or_compute(*key, compute, meta={"num_images": 50})
    second = cache.get_or_compute(*key, compute)
    assert len(calls) == 1
    for got in (first, second):
        np.testing.assert_array_equal(got[0], mu)
        np.testing.assert_array_equal(got[1], sigma)
    path = cache.path(*key)
    assert path.parent == tmp_path / "fid_stats" and path.suffix == ".npz"
    assert load_statistics_meta(path)["num_images"] == 50
    # A file whose recorded key differs (e.g. copied by hand) is refused, not used.
    save_statistics(path, mu, sigma, meta={"key": {"dataset": "other"}})
    with pytest.raises(DataError, match="delete the file"):
        cache.load(*key)
