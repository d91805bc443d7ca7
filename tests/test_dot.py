"""DOT's reference defaults: per-sample Adam, K_eff as a mean of maxima, spectral-norm thermalisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm

import refine
from refine.errors import ConfigError
from refine.generator import LatentGenerator, NormalPrior
from refine.ratio import DiscriminatorRatio, FunctionRatio
from refine.samplers import get_sampler
from refine.samplers.dot import estimate_k_eff, k_eff_maxima, spectral_norm_layers, thermalised
from refine.target import LatentTarget

M = torch.tensor([0.5, 0.5])
A = 2.0  # D(x) = -A/2 ||x - M||^2


def quadratic_critic_target():
    gen = LatentGenerator(lambda z: z.clone(), NormalPrior((2,)))
    return LatentTarget(gen, FunctionRatio(lambda x: -0.5 * A * ((x - M) ** 2).sum(1)))


def test_adam_reaches_the_analytic_optimum():
    """argmin_x ||x - y|| + A/(2k) ||x - M||^2 is M + (k/A) (y - M)/||y - M|| when ||y - M|| > k/A, else y
    (moving does not pay where the critic's slope (A/k) ||y - M|| is below the transport cost's, 1)."""
    target = quadratic_critic_target()
    n, k = 200, 1.0
    res = refine.sample(target, "dot", n, rng=torch.Generator().manual_seed(0), k_eff=k, steps=400)
    y = target.prior.sample(n, rng=torch.Generator().manual_seed(0))  # k_eff given: the starts come first
    d = (y - M).norm(dim=1, keepdim=True)
    expected = torch.where(d > k / A, M + (k / A) * (y - M) / d, y)
    err = (res.x - expected).norm(dim=1)
    assert err.max() < 0.03, err.max()  # Adam's steps are about lr = 0.01 near the optimum
    assert (d > k / A).float().mean() > 0.5  # most samples move
    assert res.info["optimizer"] == "adam"


def test_adam_first_step_is_lr_times_the_sign():
    """With beta1 = 0 and bias correction, Adam's first update is lr * sign(gradient) per element."""
    target = quadratic_critic_target()
    n, k, lr = 50, 1.0, 0.01
    res = refine.sample(target, "dot", n, rng=torch.Generator().manual_seed(1), k_eff=k, steps=1, lr=lr)
    y = target.prior.sample(n, rng=torch.Generator().manual_seed(1))
    # the objective's gradient at x = y: d/dx ||x - y|| is ~0 there (smoothed norm), so it is A/k (x - M)
    g = A / k * (y - M)
    torch.testing.assert_close(res.x, y - lr * torch.sign(g), rtol=0, atol=1e-5)


def test_adam_does_not_depend_on_batch_size():
    target = quadratic_critic_target()
    outs = [
        refine.sample(target, "dot", 30, rng=torch.Generator().manual_seed(2), k_eff=1.0, steps=20, batch_size=bs).x
        for bs in (7, 30)
    ]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-6)


def test_engine_switches_apply_to_sgd_only():
    with pytest.raises(ConfigError, match="optimizer=sgd"):
        get_sampler("dot", noise_scale=0.5)
    get_sampler("dot", optimizer="sgd", noise_scale=0.5)
    with pytest.raises(ConfigError, match="beta2"):
        get_sampler("dot", beta2=1.0)
    with pytest.raises(ConfigError, match="k_eff_repeats"):
        get_sampler("dot", k_eff_repeats=0)


# --------------------------------------------------------------------------- K_eff
def mlp_target(seed=0):
    torch.manual_seed(seed)
    g = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    d = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    for p in list(g.parameters()) + list(d.parameters()):
        p.requires_grad_(False)
    return LatentTarget(LatentGenerator(g, NormalPrior((2,))), DiscriminatorRatio(d, "critic"))


@pytest.mark.parametrize("space", ["data", "latent"])
def test_k_eff_is_the_mean_of_maxima_over_fresh_pairs(space):
    target = mlp_target()
    p, r = 25, 4
    maxima = k_eff_maxima(target, p, space=space, rng=torch.Generator().manual_seed(3), repeats=r)
    assert maxima.shape == (r,) and len(set(maxima.tolist())) == r  # each repeat on its own pairs
    # by hand: all first sides, then all second sides, from the same stream
    rng = torch.Generator().manual_seed(3)
    z1, z2 = target.prior.sample(p * r, rng=rng), target.prior.sample(p * r, rng=rng)
    with torch.no_grad():
        x1, x2 = target.generator(z1), target.generator(z2)
        num = (target.log_ratio(x1) - target.log_ratio(x2)).abs()
    den = (x1 - x2).norm(dim=1) if space == "data" else (z1 - z2).norm(dim=1)
    torch.testing.assert_close(maxima, (num / den).view(r, p).max(1).values)
    k = estimate_k_eff(target, p, space=space, rng=torch.Generator().manual_seed(3), repeats=r)
    assert k == pytest.approx(float(maxima.double().mean()))
    assert k == estimate_k_eff(target, p, space=space, rng=torch.Generator().manual_seed(3), repeats=r)


def test_k_eff_mean_of_ten_varies_less_than_one_max():
    target = mlp_target()
    one = torch.tensor(
        [estimate_k_eff(target, 100, space="data", rng=torch.Generator().manual_seed(s)) for s in range(8)]
    )
    ten = torch.tensor(
        [estimate_k_eff(target, 100, space="data", rng=torch.Generator().manual_seed(s), repeats=10) for s in range(8)]
    )
    assert ten.std() < 0.6 * one.std(), (one.std(), ten.std())


def test_k_eff_refuses_degenerate_inputs():
    collapsed = LatentTarget(
        LatentGenerator(lambda z: torch.zeros_like(z), NormalPrior((2,))), FunctionRatio(lambda x: x.sum(1))
    )
    with pytest.raises(ConfigError, match="collapsed generator"):
        estimate_k_eff(collapsed, 10, space="data", rng=torch.Generator().manual_seed(0), repeats=3)
    constant = LatentTarget(
        LatentGenerator(lambda z: z.clone(), NormalPrior((2,))), FunctionRatio(lambda x: torch.zeros(len(x)))
    )
    with pytest.raises(ConfigError, match="constant"):
        estimate_k_eff(constant, 10, space="latent", rng=torch.Generator().manual_seed(0), repeats=3)


# --------------------------------------------------------------------------- thermalisation
def sn_target():
    torch.manual_seed(0)
    g = nn.Sequential(spectral_norm(nn.Linear(2, 16)), nn.Tanh(), nn.Linear(16, 2))
    d = nn.Sequential(
        parametrizations.spectral_norm(nn.Linear(2, 16)),
        nn.BatchNorm1d(16),
        nn.Tanh(),
        spectral_norm(nn.Linear(16, 1)),
    )
    with torch.no_grad():  # BatchNorm with running statistics of its own, which must not move
        d[1].running_mean.normal_()
    for net in (g, d):
        net.eval().requires_grad_(False)
    return LatentTarget(LatentGenerator(g, NormalPrior((2,))), DiscriminatorRatio(d, "critic")), g, d


def _buffers(*nets):
    return [b.clone() for net in nets for b in net.buffers()]


def test_thermalisation_restores_buffers_and_flags():
    target, g, d = sn_target()
    assert len(spectral_norm_layers(target.generator, target.ratio)) == 3
    before, flags = _buffers(g, d), [m.training for net in (g, d) for m in net.modules()]
    bn = d[1].running_mean.clone()
    with thermalised(target, 20, rng=torch.Generator().manual_seed(0)) as rows:
        assert rows == 200
        inside = _buffers(g, d)
        assert any(not torch.equal(a, b) for a, b in zip(before, inside))  # the power iteration ran
        assert [m.training for net in (g, d) for m in net.modules()] == flags
        assert torch.equal(d[1].running_mean, bn)  # nothing but the spectral norms was in training mode
    after = _buffers(g, d)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert [m.training for net in (g, d) for m in net.modules()] == flags


def test_dot_thermalises_spectral_norm_and_counts_it():
    target, g, d = sn_target()
    before = _buffers(g, d)
    bn = d[1].running_mean.clone()
    res = refine.sample(target, "dot", 16, rng=torch.Generator().manual_seed(0), steps=3, pairs=10)
    assert torch.equal(d[1].running_mean, bn)
    assert all(torch.equal(a, b) for a, b in zip(before, _buffers(g, d)))
    assert res.info["thermalized_rows"] == 1000
    assert res.info["g_evals"] == 16 + 2 * 10 * 10 + 1000
    cold = refine.sample(target, "dot", 16, rng=torch.Generator().manual_seed(0), steps=3, pairs=10, thermalize=0)
    assert cold.info["thermalized_rows"] == 0 and not torch.equal(cold.x, res.x)
    plain = mlp_target()  # no spectral norm: nothing runs and the rng stream is untouched
    a = refine.sample(plain, "dot", 8, rng=torch.Generator().manual_seed(0), steps=2, pairs=10)
    b = refine.sample(plain, "dot", 8, rng=torch.Generator().manual_seed(0), steps=2, pairs=10, thermalize=0)
    assert a.info["thermalized_rows"] == 0 and torch.equal(a.x, b.x)
