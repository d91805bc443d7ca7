"""Contract tests over the sampler registry, and the errors samplers raise."""

import math

import pytest
import torch

import refine
from refine.errors import BudgetExceededError, ConfigError, NonFiniteError
from refine.generator import LatentGenerator, NormalPrior
from refine.ratio import DiscriminatorRatio, FunctionRatio
from refine.samplers import SAMPLERS, get_sampler, sampler_options
from refine.target import LatentTarget

FAST = {"mh": {"k": 3}, "rs": {"burn_in": 64}, "drs": {"burn_in": 64}, "sir": {"candidates": 3}}
REQUIRED_INFO = {"method", "n", "g_evals", "d_evals", "g_evals_per_sample", "d_evals_per_sample", "wall_time_s"}


def tiny_target(latent=(4,)):
    torch.manual_seed(0)
    g = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(latent), 6))
    d = torch.nn.Sequential(torch.nn.Linear(6, 1))
    return LatentTarget(LatentGenerator(g, NormalPrior(latent)), DiscriminatorRatio(d))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_honours_the_contract(name):
    target = tiny_target()
    res = refine.sample(target, name, 10, rng=torch.Generator().manual_seed(0), **FAST.get(name, {}))
    assert res.x.shape == (10, 6)
    if res.z is not None:
        assert res.z.shape == (10, 4)
        assert torch.allclose(target.generator(res.z), res.x, atol=1e-5)
    assert REQUIRED_INFO <= set(res.info), REQUIRED_INFO - set(res.info)
    assert res.info["method"] == name and res.info["n"] == 10
    assert torch.isfinite(res.x).all()
    # Options are listed and have help text.
    for opt in sampler_options(name):
        assert opt["help"], f"{name}.{opt['name']} has no help"


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_unknown_option_lists_the_valid_ones(name):
    with pytest.raises(ConfigError) as e:
        get_sampler(name, no_such_option=1)
    assert "no_such_option" in str(e.value)
    for opt in sampler_options(name):
        assert opt["name"] in str(e.value)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        get_sampler("nope")
    for name in SAMPLERS:
        assert name in str(e.value)


def test_options_from_strings_are_coerced_and_checked():
    assert get_sampler("drs", gamma="95").gamma == 95.0
    assert get_sampler("mh", k="12").k == 12
    with pytest.raises(ConfigError, match="expected int"):
        get_sampler("mh", k="twelve")
    with pytest.raises(ConfigError, match=r"\[0, 100\]"):
        get_sampler("drs", gamma=101)
    with pytest.raises(ConfigError, match="k"):
        get_sampler("mh", k=0)
    with pytest.raises(ConfigError, match="expected one of"):
        get_sampler("mh", init="somewhere")


def test_latent_shapes_with_trailing_unit_dims():
    target = tiny_target(latent=(4, 1, 1))
    res = refine.sample(target, "drs", 8, rng=torch.Generator().manual_seed(0), burn_in=32)
    assert res.z.shape == (8, 4, 1, 1)


@pytest.mark.parametrize("name", ["rs", "drs", "mh", "sir"])
def test_nan_scores_are_an_error_naming_the_cause(name):
    gen = LatentGenerator(lambda z: z, NormalPrior((2,)))
    target = LatentTarget(gen, FunctionRatio(lambda x: torch.where(x[:, 0] > 0, torch.nan, 0.0)))
    with pytest.raises(NonFiniteError, match="NaN"):
        refine.sample(target, name, 5, rng=torch.Generator().manual_seed(0), **FAST.get(name, {}))


def test_zero_acceptance_stops_with_an_actionable_error():
    # One latent in a million gets a huge weight: M is huge and nearly nothing is accepted.
    gen = LatentGenerator(lambda z: z, NormalPrior((1,)))
    target = LatentTarget(gen, FunctionRatio(lambda x: torch.where(x[:, 0] > 4.5, 50.0, 0.0)))
    with pytest.raises(BudgetExceededError) as e:  # exact rs (the default bound would cap r instead)
        refine.sample(
            target, "rs", 100, rng=torch.Generator().manual_seed(0), burn_in=1_000_000, budget=50, m_quantile=1.0
        )
    msg = str(e.value)
    assert "acceptance rate" in msg and "budget" in msg


def test_default_bound_refuses_when_no_cap_fits():
    # log r = 8x: even r capped at its 90th percentile accepts about a tenth of the proposals, against a budget of 1.01
    target = LatentTarget(LatentGenerator(lambda z: z, NormalPrior((1,))), FunctionRatio(lambda x: 8.0 * x[:, 0]))
    with pytest.raises(
        BudgetExceededError, match=r"acceptance rate.*no cap at the burn-in's 0.99, 0.95, 0.9 quantiles"
    ):
        refine.sample(target, "rs", 100, rng=torch.Generator().manual_seed(0), budget=1.01)


def test_bad_n_is_an_error():
    with pytest.raises(ConfigError):
        refine.sample(tiny_target(), "sir", 0)


def test_wrong_ratio_shape_is_an_error():
    gen = LatentGenerator(lambda z: z, NormalPrior((2,)))
    target = LatentTarget(gen, DiscriminatorRatio(lambda x: x))  # returns (B, 2)
    with pytest.raises(refine.errors.ShapeError, match=r"expected \(4,\)"):
        refine.sample(target, "sir", 2, candidates=2, rng=torch.Generator().manual_seed(0))


def test_same_seed_same_samples():
    t = tiny_target()
    a = refine.sample(t, "drs", 20, rng=torch.Generator().manual_seed(7), burn_in=64).x
    b = refine.sample(t, "drs", 20, rng=torch.Generator().manual_seed(7), burn_in=64).x
    assert torch.equal(a, b)
