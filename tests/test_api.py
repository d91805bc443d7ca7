"""refine.wrap / refine.sample: any generator in, refined samples out; mistakes fail up front in one line."""

import math
import typing
import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import refine
from refine.errors import ConfigError, NotDifferentiableError, ShapeError
from refine.samplers.base import SAMPLERS, Sampler, SampleResult


def mlp(i, o, h=8):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o)).eval()


@dataclass(frozen=True)
class _GradProbe(Sampler):
    needs_gradients: typing.ClassVar[bool] = True
    name: typing.ClassVar[str] = "gradprobe"

    def sample(self, target, n, *, rng=None, progress=False, real=None):
        z = target.prior.sample(n, rng=rng, device=target.device)
        _, g, x = target.value_and_grad(z)
        return SampleResult(x, z, {"method": self.name, "n": n, "grad_norm": float(g.norm())})


@dataclass(frozen=True)
class _DataGradProbe(_GradProbe):
    name: typing.ClassVar[str] = "datagradprobe"
    moves_in_data_space: typing.ClassVar[bool] = True  # declared: only d log r / dx is needed

    def sample(self, target, n, *, rng=None, progress=False, real=None):
        z = target.prior.sample(n, rng=rng, device=target.device)
        with torch.no_grad():
            x = target.generator(z)
        x = x.requires_grad_(True)
        (g,) = torch.autograd.grad(target.log_ratio(x).sum(), x)
        return SampleResult(x.detach(), z, {"method": self.name, "n": n})


@pytest.fixture
def grad_samplers(monkeypatch):
    monkeypatch.setitem(SAMPLERS, "gradprobe", _GradProbe)
    monkeypatch.setitem(SAMPLERS, "datagradprobe", _DataGradProbe)


def test_wrap_a_module_and_sample():
    G, D = mlp(2, 2), mlp(2, 1)
    target = refine.wrap(G, latent_shape=2, discriminator=D, output="logit")
    assert isinstance(target, refine.LatentTarget) and target.generator.output_range == "none"
    res = refine.sample(target, "sir", n=30, rng=torch.Generator().manual_seed(0), candidates=3)
    assert res.x.shape == (30, 2) and res.info["n"] == 30


def test_wrap_without_a_ratio_gives_the_generator():
    gen = refine.wrap(lambda z: 2 * z, latent_shape=(3,), prior="uniform")
    assert isinstance(gen, refine.LatentGenerator) and isinstance(gen.prior, refine.UniformPrior)
    assert refine.sample(gen, "none", n=5, rng=torch.Generator().manual_seed(0)).x.abs().max() <= 2
    with pytest.raises(ConfigError, match="needs a density ratio"):
        refine.sample(gen, "drs", n=5)


def test_wrap_takes_a_prior_object_or_a_latent_generator():
    prior = refine.UniformPrior((2,), low=0.0, high=1.0)
    target = refine.wrap(lambda z: z, prior=prior, ratio=refine.FunctionRatio(lambda x: -x.sum(1)))
    assert target.prior is prior
    again = refine.wrap(target.generator, ratio=target.ratio, output_range="[0,1]")
    assert again.generator.output_range == "[0,1]" and again.prior is prior
    with pytest.raises(ConfigError, match="already wrapped"):
        refine.wrap(target)


@pytest.mark.parametrize(
    "kwargs,err,needle",
    [
        ({}, ConfigError, "latent_shape"),
        ({"latent_shape": 2, "discriminator": mlp(2, 1)}, ConfigError, "output="),
        ({"latent_shape": 2, "output": "logit"}, ConfigError, "discriminator="),
        (
            {
                "latent_shape": 2,
                "discriminator": mlp(2, 1),
                "output": "logit",
                "ratio": refine.FunctionRatio(lambda x: x[:, 0]),
            },
            ConfigError,
            "not both",
        ),
        ({"latent_shape": 2, "discriminator": mlp(2, 1), "output": "odds"}, ConfigError, "logit, prob, critic"),
        ({"latent_shape": 2, "output_range": "0-1"}, ConfigError, "output_range"),
        ({"latent_shape": 3}, ShapeError, "first layer is Linear(in_features=2)"),
        (
            {"latent_shape": 2, "discriminator": mlp(3, 1), "output": "logit"},
            ShapeError,
            "does not take the generator's samples of shape (N, 2)",
        ),
        ({"latent_shape": 2, "discriminator": mlp(2, 4), "output": "logit"}, ShapeError, "expected (2,) or (2, 1)"),
        ({"latent_shape": 2, "ratio": object()}, ConfigError, "log_ratio"),
    ],
)
def test_wrap_mistakes_fail_in_one_line(kwargs, err, needle):
    with pytest.raises(err) as info:
        refine.wrap(mlp(2, 2), **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_image_output_range_is_declared_not_guessed():
    G = nn.Sequential(nn.Linear(4, 12), nn.Unflatten(1, (3, 2, 2)), nn.Tanh()).eval()
    with pytest.raises(ConfigError, match="no output range was declared"):
        refine.wrap(G, latent_shape=4)
    assert refine.wrap(G, latent_shape=4, output_range="[-1,1]").output_range == "[-1,1]"
    with pytest.warns(UserWarning, match="outside its declared output range"):
        refine.wrap(lambda z: torch.tanh(z).view(-1, 1, 2, 2) - 0.9, latent_shape=4, output_range="[0,1]")


def test_probe_leaves_batchnorm_statistics_alone():
    G = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in G.state_dict().items()}
    with pytest.warns(UserWarning, match="training mode"):
        refine.wrap(G, latent_shape=2, discriminator=mlp(2, 1), output="logit")
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    G.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refine.wrap(G, latent_shape=2)


def test_check_false_skips_the_probe():
    calls = []

    def G(z):
        calls.append(len(z))
        return z

    refine.wrap(G, latent_shape=2, check=False)
    assert calls == []
    refine.wrap(G, latent_shape=2)
    assert calls == [2]


def test_gradient_methods_name_the_part_that_stops_gradients(grad_samplers):
    ratio = refine.FunctionRatio(lambda x: -(x * x).sum(1))
    ok = refine.wrap(lambda z: 2 * z, latent_shape=2, ratio=ratio)
    assert refine.sample(ok, "gradprobe", n=4, rng=torch.Generator().manual_seed(0)).info["grad_norm"] > 0

    def detached(z):
        return (2 * z).detach()

    bad_g = refine.wrap(detached, latent_shape=2, ratio=ratio)
    with pytest.raises(NotDifferentiableError, match="no gradient flows from the output of the generator"):
        refine.sample(bad_g, "gradprobe", n=4)
    refine.sample(bad_g, "datagradprobe", n=4)  # data-space methods differentiate the ratio only
    refine.sample(bad_g, "sir", n=4, candidates=2)  # gradient-free methods do not care
    with pytest.raises(NotDifferentiableError, match="declared non-differentiable"):
        refine.sample(refine.wrap(lambda z: 2 * z, latent_shape=2, ratio=ratio, differentiable=False), "gradprobe", n=4)
    frozen_ratio = refine.FunctionRatio(lambda x: -(x * x).sum(1), differentiable=False)
    with pytest.raises(NotDifferentiableError, match="density ratio"):
        refine.sample(refine.wrap(lambda z: 2 * z, latent_shape=2, ratio=frozen_ratio), "gradprobe", n=4)
    detached_ratio = refine.FunctionRatio(lambda x: -(x * x).sum(1).detach())
    with pytest.raises(NotDifferentiableError, match="discriminator|ratio"):
        refine.sample(refine.wrap(lambda z: 2 * z, latent_shape=2, ratio=detached_ratio), "datagradprobe", n=4)


def test_sample_refuses_what_wrap_did_not_return():
    with pytest.raises(ConfigError, match="LatentTarget"):
        refine.sample(mlp(2, 2), "sir", n=4)


def test_function_generator_with_closed_form_ratio_is_exact():
    """G(z) = z, z ~ N(0, 1); data N(0.5, 0.5^2): exact rejection sampling must give the data's mean and variance.

    Bounds: 5 standard errors (two-sided alpha < 1e-6 each): mean se = s / sqrt(n), variance se = s^2 sqrt(2 / (n - 1)).
    """
    mu, s, n = 0.5, 0.5, 4000

    def log_r(x):
        x = x[:, 0]
        return -0.5 * ((x - mu) / s) ** 2 - math.log(s) + 0.5 * x**2

    target = refine.wrap(lambda z: z, latent_shape=1, ratio=refine.FunctionRatio(log_r))
    x = refine.sample(target, "rs", n=n, rng=torch.Generator().manual_seed(5)).x[:, 0].double()
    assert abs(float(x.mean()) - mu) < 5 * s / math.sqrt(n)
    assert abs(float(x.var()) - s * s) < 5 * s * s * math.sqrt(2 / (n - 1))
