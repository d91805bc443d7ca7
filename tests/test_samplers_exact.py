"""Exactness on a closed-form case.

Generator G(z) = z with z ~ N(0, 1) (1-D), data N(mu, s^2) with s < 1, so the ratio
r(x) = N(x; mu, s^2) / N(x; 0, 1) is known and bounded and the refined target is exactly
N(mu, s^2). Each output is compared with it by a one-sample Kolmogorov–Smirnov test at
alpha = 1e-3 with a fixed seed; the same test must reject the raw generator (power).
"""

import math

import pytest
import torch
from scipy import stats

import refine
from refine.generator import LatentGenerator, NormalPrior
from refine.ratio import FunctionRatio
from refine.target import LatentTarget

MU, S = 0.7, 0.5
ALPHA = 1e-3
N = 3000


def log_ratio(x):
    x = x[:, 0]
    return (-0.5 * ((x - MU) / S) ** 2 - math.log(S)) - (-0.5 * x**2)


@pytest.fixture
def target():
    return LatentTarget(LatentGenerator(lambda z: z, NormalPrior((1,))), FunctionRatio(log_ratio))


def ks_pvalue(x):
    return stats.kstest(x[:, 0].double().numpy(), stats.norm(MU, S).cdf).pvalue


def test_ks_has_power_against_the_raw_generator(target):
    res = refine.sample(target, "none", N, rng=torch.Generator().manual_seed(0))
    assert ks_pvalue(res.x) < ALPHA


@pytest.mark.parametrize("method,options", [("rs", {}), ("mh", {"k": 100})])
def test_rs_and_mh_match_the_target(target, method, options):
    res = refine.sample(target, method, N, rng=torch.Generator().manual_seed(1), **options)
    assert res.x.shape == (N, 1)
    assert ks_pvalue(res.x) > ALPHA


def test_mh_from_real_samples_matches_the_target(target):
    real = torch.distributions.Normal(MU, S).sample((N, 1))
    res = refine.sample(target, "mh", N, rng=torch.Generator().manual_seed(2), k=50, init="real", real=real)
    assert ks_pvalue(res.x) > ALPHA


def test_rs_acceptance_matches_one_over_m(target):
    # P(accept) = 1/M with M = max r, attained at the mode of the ratio.
    xs = torch.linspace(-10, 10, 200001)[:, None]
    log_m = float(log_ratio(xs).max())
    res = refine.sample(target, "rs", 20000, rng=torch.Generator().manual_seed(3), burn_in=100000)
    rate = res.info["acceptance_rate"]
    p = math.exp(-log_m)
    se = math.sqrt(p * (1 - p) / res.info["proposals"])
    assert abs(rate - p) < 4 * se + 2e-3  # 4 standard errors, plus the burn-in's estimate of M


def test_sir_converges_as_candidates_grow(target):
    d = {}
    for m in (1, 4, 64):
        res = refine.sample(target, "sir", N, rng=torch.Generator().manual_seed(4), candidates=m)
        d[m] = stats.kstest(res.x[:, 0].double().numpy(), stats.norm(MU, S).cdf).statistic
    assert d[64] < d[4] < d[1]
    # At 64 candidates the O(1/m) bias is below what the KS test can see at this n.
    res = refine.sample(target, "sir", N, rng=torch.Generator().manual_seed(5), candidates=64)
    assert ks_pvalue(res.x) > ALPHA


def test_drs_moves_samples_towards_the_target(target):
    raw = refine.sample(target, "none", N, rng=torch.Generator().manual_seed(6)).x
    drs = refine.sample(target, "drs", N, rng=torch.Generator().manual_seed(6)).x
    # DRS is not exact, but its mean must move from 0 towards MU by more than 4 standard errors.
    assert float(drs.mean()) - float(raw.mean()) > 4 * math.sqrt(2 / N)
