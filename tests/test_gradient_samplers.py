"""Gradient refiners (DDLS, DCD, DGflow, DOT) and the Langevin engine they share."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

import refine
from refine.cli import app
from refine.errors import ConfigError, NonFiniteError, NotDifferentiableError
from refine.generator import LatentGenerator, NormalPrior, UniformPrior
from refine.nets import build
from refine.ratio import DiscriminatorRatio, FunctionRatio
from refine.samplers import get_sampler
from refine.samplers.dot import dot_objective
from refine.samplers.gradient import latent_potential
from refine.samplers.langevin import LangevinConfig, run
from refine.target import LatentTarget

GRADIENT_METHODS = {
    "ddls": {"steps": 5},
    "dcd": {"steps": 5},
    "dcd-latent": {"steps": 5, "space": "latent"},
    "dgflow": {"steps": 5},
    "dot": {"steps": 5},
    "dot-latent": {"steps": 5, "space": "latent"},
}


def method_and_options(key):
    return key.split("-")[0], dict(GRADIENT_METHODS[key])


# --------------------------------------------------------------------------- an analytic target
# prior N(0, I_2), identity generator, log r(x) = -||x - m||^2 / (2 s2): pi = N(mu, v I) with
# v = 1 / (1 + 1/s2), mu = v m / s2.
M = torch.tensor([1.5, -1.0])
S2 = 0.5
V = 1.0 / (1.0 + 1.0 / S2)
MU = V * M / S2


def gaussian_target():
    gen = LatentGenerator(lambda z: z.clone(), NormalPrior((2,)))
    return LatentTarget(gen, FunctionRatio(lambda x: -((x - M) ** 2).sum(1) / (2 * S2)))


def exact_samples(n, seed):
    return MU + math.sqrt(V) * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def chains(target, n, seed, **cfg):
    pot = latent_potential(target, prior=True)
    z0 = target.prior.sample(n, rng=torch.Generator().manual_seed(seed))
    state, stats_ = run(pot, z0, LangevinConfig(**cfg), rng=torch.Generator().manual_seed(seed + 1))
    return state.position, stats_


def test_mala_matches_the_analytic_target_and_ula_does_not_at_a_large_step():
    """Two-sample KS per coordinate against exact draws, Bonferroni alpha = 1e-3 over 2 coordinates."""
    n, eps, steps = 3000, 0.8, 100
    exact = exact_samples(n, 7)
    z, st = chains(gaussian_target(), n, 11, step_size=eps, steps=steps, mala=True)
    acc = st["accepted"] / (n * steps)
    assert 0.2 < acc < 1.0
    for k in range(2):
        assert stats.ks_2samp(z[:, k].numpy(), exact[:, k].numpy()).pvalue > 1e-3 / 2
    # the unadjusted chain at this step has variance V / (1 - eps / (4 V)) = 2.5 V: far off
    z_ula, _ = chains(gaussian_target(), n, 11, step_size=eps, steps=steps)
    assert min(stats.ks_2samp(z_ula[:, k].numpy(), exact[:, k].numpy()).pvalue for k in range(2)) < 1e-6


def test_unadjusted_error_shrinks_with_the_step_size_as_theory_says():
    """ULA on N(mu, V) is stationary at N(mu, V / (1 - eps / (4 V))): its variance error falls with eps."""
    n = 6000
    errors = []
    for eps, steps in [(0.4, 60), (0.1, 200), (0.02, 700)]:  # each run contracts by (1 - 1.5 eps)^steps < 1e-8
        z, _ = chains(gaussian_target(), n, 3, step_size=eps, steps=steps)
        var = z.double().var(0).mean().item()  # 2n values
        theory = V / (1 - eps / (4 * V))
        se = theory * math.sqrt(2 / (2 * n - 2))  # standard error of a variance estimate
        assert abs(var - theory) < 5 * se, (eps, var, theory)
        assert (z.double().mean(0) - MU.double()).abs().max() < 5 * math.sqrt(theory / n)
        errors.append(abs(var / V - 1))
    assert errors[0] > errors[1] > errors[2]


def test_mala_on_a_uniform_prior_stays_in_the_box_and_ula_reflects():
    gen = LatentGenerator(lambda z: z.clone(), UniformPrior((2,)))
    target = LatentTarget(gen, FunctionRatio(lambda x: 3.0 * x.sum(1)))  # pushes against the upper walls
    for mala in (True, False):
        res = refine.sample(
            target, "ddls", 500, rng=torch.Generator().manual_seed(0), step_size=0.1, steps=30, mala=mala
        )
        assert res.z.min() >= -1 and res.z.max() <= 1
        assert res.z.mean() > 0.2  # moved toward the high-ratio corner


# --------------------------------------------------------------------------- tiny networks
def tiny_nets(seed=0, requires_grad=True):
    torch.manual_seed(seed)
    g = build("mlp", in_dim=2, out_dim=2, hidden=16, depth=2)
    d = build("mlp", in_dim=2, out_dim=1, hidden=16, depth=2)
    for p in list(g.parameters()) + list(d.parameters()):
        p.requires_grad_(requires_grad)
    return g, d


def quadratic_target():
    """A smooth generator and the ratio log r(x) = -||x - (1, 1)||^2 (higher near (1, 1))."""
    gen = LatentGenerator(lambda z: z + 0.3 * torch.tanh(z), NormalPrior((2,)))
    return LatentTarget(gen, FunctionRatio(lambda x: -((x - 1.0) ** 2).sum(1)))


@pytest.mark.parametrize("key", list(GRADIENT_METHODS))
def test_methods_move_samples_toward_higher_ratio(key):
    method, opts = method_and_options(key)
    opts.update(steps=40, step_size=0.01)
    if method == "dcd":
        opts.update(clip=None)
    if method == "dot":
        opts.update(k_eff=0.2)  # the ratio's slope exceeds it away from (1, 1): transport pays
    target = quadratic_target()
    n = 400
    raw = refine.sample(target, "none", n, rng=torch.Generator().manual_seed(5))
    res = refine.sample(target, method, n, rng=torch.Generator().manual_seed(5), **opts)
    before = target.log_ratio(raw.x).mean().item()
    after = target.log_ratio(res.x).mean().item()
    spread = target.log_ratio(raw.x).std().item() / math.sqrt(n)
    assert after > before + 5 * spread, (before, after)
    assert res.x.shape == (n, 2) and (res.z is None) == (res.info["space"] == "data")


@pytest.mark.parametrize("space", ["data", "latent"])
def test_dot_decreases_its_objective(space):
    """With k_eff below the ratio's slope, transport pays almost everywhere: the objective falls."""
    target = quadratic_target()
    k = 0.2
    res = refine.sample(
        target, "dot", 300, rng=torch.Generator().manual_seed(2), steps=30, step_size=0.01, space=space, k_eff=k
    )
    info = res.info
    assert info["objective_end_mean"] < info["objective_start_mean"]
    if space == "data":
        # per sample: the starting samples are y = G(z) for the first n latents the sampler draws
        # from its rng (k_eff is given, so no pairs are drawn before them); there the objective is -D(y)/k
        assert res.z is None  # data-space output has no latent
        y = target.generator(target.prior.sample(300, rng=torch.Generator().manual_seed(2)))
        start = -target.log_ratio(y) / k
        end = dot_objective(target, res.x, y, k, space="data")
        assert (end < start).float().mean() > 0.95


def test_info_counts_passes_per_sample():
    g, d = tiny_nets()
    target = LatentTarget(LatentGenerator(g, NormalPrior((2,))), DiscriminatorRatio(d, "critic"))
    n, steps = 10, 4
    r = refine.sample(target, "ddls", n, rng=torch.Generator().manual_seed(0), steps=steps, batch_size=3)  # 4 chunks
    assert r.x.shape == (n, 2) and r.z.shape == (n, 2)
    i = r.info
    assert (
        i["g_evals_per_sample"]
        == i["d_evals_per_sample"]
        == i["g_backward_per_sample"]
        == i["d_backward_per_sample"]
        == steps + 1
    )
    r = refine.sample(target, "dcd", n, rng=torch.Generator().manual_seed(0), steps=steps, batch_size=3)
    assert r.x.shape == (n, 2) and r.z is None
    i = r.info
    assert (
        i["space"] == "data"
        and i["g_evals_per_sample"] == 1
        and i["g_backward"] == 0
        and i["d_backward_per_sample"] == steps + 1
    )
    r = refine.sample(target, "dot", n, rng=torch.Generator().manual_seed(0), steps=steps, pairs=20, k_eff_repeats=3)
    assert r.info["d_evals"] == n * (steps + 1) + 120 and r.info["g_evals"] == n + 120  # 3 x 20 pairs of K_eff
    r = refine.sample(target, "ddls", n, rng=torch.Generator().manual_seed(0), steps=steps, mala=True)
    assert 0 <= r.info["acceptance_rate"] <= 1


@pytest.mark.parametrize("key", list(GRADIENT_METHODS))
def test_no_parameter_gradients_and_flags_unchanged(key):
    method, opts = method_and_options(key)
    g, d = tiny_nets()
    g.layers[0].weight.requires_grad_(False)  # a mix of flags
    flags = [p.requires_grad for p in list(g.parameters()) + list(d.parameters())]
    target = LatentTarget(LatentGenerator(g, NormalPrior((2,))), DiscriminatorRatio(d, "critic"))
    refine.sample(target, method, 20, rng=torch.Generator().manual_seed(0), **opts)
    params = list(g.parameters()) + list(d.parameters())
    assert all(p.grad is None for p in params)
    assert [p.requires_grad for p in params] == flags


def test_same_seed_same_samples():
    g, d = tiny_nets()
    target = LatentTarget(LatentGenerator(g, NormalPrior((2,))), DiscriminatorRatio(d, "critic"))
    a = refine.sample(target, "ddls", 30, rng=torch.Generator().manual_seed(4), steps=5)
    b = refine.sample(target, "ddls", 30, rng=torch.Generator().manual_seed(4), steps=5)
    assert torch.equal(a.x, b.x) and torch.equal(a.z, b.z)


# --------------------------------------------------------------------------- errors
DATA_SPACE = {"dcd", "dot"}  # keys whose chains move x: they need gradients of the ratio only


@pytest.mark.parametrize("key", list(GRADIENT_METHODS))
def test_non_differentiable_inputs_fail_up_front(key):
    method, opts = method_and_options(key)
    g, d = tiny_nets()
    calls = {"n": 0}

    def counting(x):
        calls["n"] += 1
        return d(x)

    bad_ratio = [
        LatentTarget(LatentGenerator(g, NormalPrior((2,))), FunctionRatio(counting, differentiable=False)),
        LatentTarget(LatentGenerator(g, NormalPrior((2,))), FunctionRatio(lambda x: counting(x).detach())),
    ]
    bad_generator = [
        LatentTarget(LatentGenerator(g, NormalPrior((2,)), differentiable=False), FunctionRatio(counting)),
        LatentTarget(LatentGenerator(lambda z: g(z).detach(), NormalPrior((2,))), FunctionRatio(counting)),
    ]
    for target in bad_ratio + ([] if key in DATA_SPACE else bad_generator):
        calls["n"] = 0
        with pytest.raises(NotDifferentiableError):
            refine.sample(target, method, 10, rng=torch.Generator().manual_seed(0), **opts)
        with pytest.raises(NotDifferentiableError):  # direct use of the sampler object too
            get_sampler(method, **opts).sample(target, 10, rng=torch.Generator().manual_seed(0))
        assert calls["n"] <= 2  # at most the probe evaluations, no sampling work
    if key in DATA_SPACE:  # data-space chains never differentiate through G
        for target in bad_generator:
            res = get_sampler(method, **opts).sample(target, 10, rng=torch.Generator().manual_seed(0))
            assert torch.isfinite(res.x).all()


@pytest.mark.parametrize(
    "method, opts, needle",
    [
        ("ddls", {"step_size": 0}, "step_size"),
        ("ddls", {"step_size": -1e-3}, "step_size"),
        ("ddls", {"steps": 0}, "steps"),
        ("ddls", {"decay": 1.5}, "decay"),
        ("ddls", {"clip": -1}, "clip"),
        ("ddls", {"potential_temperature": 0}, "potential_temperature"),
        ("ddls", {"mala": True, "noise_scale": 0}, "mala"),
        ("ddls", {"batch_size": 0}, "batch_size"),
        ("ddls", {"stepsize": 0.1}, "stepsize"),
        ("dgflow", {"divergence": "TV"}, "divergence"),
        ("dcd", {"space": "pixel"}, "space"),
        ("dcd", {"finetune": -1}, "finetune"),
        ("dot", {"mala": True, "noise_scale": 1.0}, "mala"),
        ("dot", {"pairs": 0}, "pairs"),
        ("dot", {"k_eff": 0}, "k_eff"),
    ],
)
def test_bad_options_name_the_cause(method, opts, needle):
    with pytest.raises(ConfigError, match=needle):
        get_sampler(method, **opts)


def test_nan_scores_are_an_error_naming_the_step():
    g, _ = tiny_nets()
    nan = FunctionRatio(lambda x: x[:, 0] * float("nan"))
    with pytest.raises(NotDifferentiableError, match="no finite gradient"):  # caught by the up-front check
        get_sampler("ddls", steps=3).sample(LatentTarget(LatentGenerator(g, NormalPrior((2,))), nan), 10)
    calls = []

    def turns_nan(x):  # finite for the up-front check, NaN once the chains run: the engine names the step
        calls.append(1)
        return x[:, 0] * (float("nan") if len(calls) > 1 else 1.0)

    target = LatentTarget(LatentGenerator(g, NormalPrior((2,))), FunctionRatio(turns_nan))
    with pytest.raises(NonFiniteError, match="step 0"):
        get_sampler("ddls", steps=3).sample(target, 10, rng=torch.Generator().manual_seed(0))
    with pytest.raises(refine.errors.RefineError):  # the API's up-front check may catch it first
        refine.sample(target, "ddls", 10, rng=torch.Generator().manual_seed(0), steps=3)


def test_dcd_finetuning_uses_a_copy_and_needs_real_samples():
    g, d = tiny_nets()
    before = {k: v.clone() for k, v in d.state_dict().items()}
    target = LatentTarget(LatentGenerator(g, NormalPrior((2,))), DiscriminatorRatio(d, "critic"))
    with pytest.raises(ConfigError, match="real"):
        refine.sample(target, "dcd", 10, rng=torch.Generator().manual_seed(0), steps=2, finetune=2)
    real = torch.randn(64, 2, generator=torch.Generator().manual_seed(1)) + 2
    res = refine.sample(
        target,
        "dcd",
        10,
        rng=torch.Generator().manual_seed(0),
        steps=2,
        finetune=3,
        finetune_batch=16,
        finetune_steps=2,
        real=real,
    )
    assert res.info["finetune"]["iterations"] == 3
    assert res.info["d_evals"] > 10 * 3  # the fine-tuning passes are counted
    assert all(torch.equal(before[k], v) for k, v in d.state_dict().items())
    assert all(p.grad is None for p in d.parameters())


# --------------------------------------------------------------------------- CLI
runner = CliRunner()


def test_cli_sample_and_list_with_gradient_methods(tmp_path):
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0
    for name in ("ddls", "dcd", "dgflow", "dot"):
        assert f"  {name} " in res.output
    assert "[gradients]" in res.output
    out = tmp_path / "ddls"
    res = runner.invoke(
        app,
        [
            "sample",
            "--method",
            "ddls",
            "-n",
            "50",
            "-o",
            "steps=3",
            "-o",
            "mala=true",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    record = json.loads((out / "run.json").read_text())
    assert record["info"]["method"] == "ddls" and record["info"]["g_backward_per_sample"] == 4
    with np.load(out / "samples.npz", allow_pickle=False) as f:
        assert f["x"].shape == (50, 2) and f["z"].shape == (50, 2)


def test_cli_bad_gradient_option_is_one_line(tmp_path):
    res = runner.invoke(
        app,
        [
            "sample",
            "--method",
            "dgflow",
            "-o",
            "step_size=-1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "x"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 2
    assert "step_size" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_dot_sphere_keeps_each_latent_norm():
    """Latent DOT with sphere=True moves z along the sphere through it (each sample's own norm)."""
    target = quadratic_target()
    n = 200
    res = refine.sample(
        target,
        "dot",
        n,
        rng=torch.Generator().manual_seed(6),
        space="latent",
        sphere=True,
        k_eff=0.2,
        steps=30,
        step_size=0.002,
    )
    z0 = target.prior.sample(
        n, rng=torch.Generator().manual_seed(6)
    )  # the starting latents (k_eff given: no pairs drawn first)
    moved = (res.z - z0).norm(dim=1)
    assert moved.mean() > 0.01
    # a tangent step of length h changes the norm by at most h^2 / (2 ||z||); 30 steps of length <= (eps/2)(|grad|/k + 1)
    assert ((res.z.norm(dim=1) - z0.norm(dim=1)).abs() < 0.1 * moved + 1e-3).float().mean() > 0.95
    free = refine.sample(
        target, "dot", n, rng=torch.Generator().manual_seed(6), space="latent", k_eff=0.2, steps=30, step_size=0.002
    )
    assert (free.z.norm(dim=1) - z0.norm(dim=1)).abs().mean() > 5 * (res.z.norm(dim=1) - z0.norm(dim=1)).abs().mean()
