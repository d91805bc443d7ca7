"""Priors, the generator adapter, ratios and calibration, the latent target, checkpoints."""

import math

import numpy as np
import pytest
import torch

import refine
from refine.errors import CheckpointError, ConfigError, ShapeError
from refine.generator import LatentGenerator, NormalPrior, UniformPrior, make_prior
from refine.io import load_gan, load_ratio, save_discriminator_ratio, save_gan
from refine.nets import arch_config, build_from_config
from refine.ratio import DiscriminatorRatio, calibrate, calibration_stats
from refine.target import LatentTarget


def test_normal_prior_shapes_and_log_prob(rng):
    p = NormalPrior((100, 1, 1))
    z = p.sample(5, rng=rng)
    assert z.shape == (5, 100, 1, 1)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)
    assert torch.allclose(p.log_prob(z), ref, atol=1e-4)
    with pytest.raises(ShapeError):
        p.log_prob(torch.zeros(5, 99, 1, 1))


def test_uniform_prior_support(rng):
    p = UniformPrior((3,), low=-2.0, high=2.0)
    z = p.sample(1000, rng=rng)
    assert float(z.min()) >= -2 and float(z.max()) <= 2
    assert torch.allclose(p.log_prob(z), torch.full((1000,), -3 * math.log(4.0)))
    assert p.log_prob(torch.full((1, 3), 3.0)).item() == -math.inf
    assert make_prior(p.to_config()) == p
    with pytest.raises(ConfigError):
        UniformPrior((3,), low=1.0, high=1.0)


def test_generator_adapter_checks_latents():
    g = LatentGenerator(lambda z: z * 2, "normal", latent_shape=4)
    with pytest.raises(ShapeError, match=r"expected \(N, 4\)"):
        g(torch.zeros(2, 5))
    with pytest.raises(ConfigError, match="output_range"):
        LatentGenerator(lambda z: z, "normal", latent_shape=4, output_range="0..255")


def test_discriminator_outputs_agree():
    logits = torch.tensor([[-3.0], [0.0], [2.5]])
    x = torch.zeros(3, 1)
    as_logit = DiscriminatorRatio(lambda _: logits, "logit").log_ratio(x)
    as_prob = DiscriminatorRatio(lambda _: torch.sigmoid(logits), "prob").log_ratio(x)
    assert torch.allclose(as_logit, logits[:, 0]) and torch.allclose(as_prob, logits[:, 0], atol=1e-5)
    critic = DiscriminatorRatio(lambda _: logits, "critic", temperature=0.5).log_ratio(x)
    assert torch.allclose(critic, logits[:, 0] / 0.5)
    with pytest.raises(ConfigError):
        DiscriminatorRatio(lambda _: logits, "energy")


def _miscalibrated_scores(n, rng):
    # True log ratio t; the discriminator reports 3 t + 1 (overconfident and biased).
    real = torch.randn(n, 1, generator=rng) * 0.5 + 0.5
    fake = torch.randn(n, 1, generator=rng)

    def true_log_ratio(x):
        x = x[:, 0]
        return (-0.5 * ((x - 0.5) / 0.5) ** 2 - math.log(0.5)) - (-0.5 * x**2)

    return real, fake, true_log_ratio


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_calibration_improves_a_miscalibrated_discriminator(method, rng):
    real, fake, t = _miscalibrated_scores(4000, rng)
    ratio = DiscriminatorRatio(lambda x: 3 * t(x) + 1)
    cal, report = calibrate(ratio, real, fake, method, rng=torch.Generator().manual_seed(0))
    assert report["after"]["brier"] < report["before"]["brier"]
    assert abs(report["after"]["z"]) < abs(report["before"]["z"])
    grid = torch.linspace(-0.5, 1.5, 50)[:, None]
    err_before = (ratio.log_ratio(grid) - t(grid)).abs().mean()
    err_after = (cal.log_ratio(grid) - t(grid)).abs().mean()
    assert err_after < err_before / 2
    assert cal.differentiable == (method == "logistic")


def test_calibration_stats_known_values():
    s = calibration_stats(np.array([0.5, 0.5]), np.array([1, 0]))
    assert s["z"] == 0 and s["brier"] == 0.25 and s["ece"] == 0
    s = calibration_stats(np.array([0.9] * 10), np.array([1] * 10))
    assert s["z"] > 0 and math.isclose(s["ece"], 0.1, rel_tol=1e-9)


def test_checkpoint_round_trip(tmp_path, rng):
    g_arch, d_arch = (
        arch_config("mlp", in_dim=3, out_dim=2, hidden=8, depth=2),
        arch_config("mlp", in_dim=2, out_dim=1, hidden=8, depth=2),
    )
    g, d = build_from_config(g_arch), build_from_config(d_arch)
    save_gan(
        tmp_path / "g.pt",
        generator=g,
        generator_arch=g_arch,
        prior=UniformPrior((3,)),
        discriminator=d,
        discriminator_arch=d_arch,
        meta={"tuple": (1, 2), "version": torch.__version__},
    )
    gan = load_gan(tmp_path / "g.pt")
    z = gan.generator.prior.sample(4, rng=rng)
    assert torch.equal(gan.generator(z), g(z)) and isinstance(gan.generator.prior, UniformPrior)
    assert torch.equal(gan.ratio.log_ratio(g(z)), d(g(z))[:, 0])
    assert not any(p.requires_grad for p in gan.generator.net.parameters())
    save_discriminator_ratio(tmp_path / "r.pt", DiscriminatorRatio(d, temperature=2.0), d_arch)
    r = load_ratio(tmp_path / "r.pt")
    assert torch.allclose(r.log_ratio(g(z)), d(g(z))[:, 0] / 2)


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_gan(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="truncated or corrupt|not a valid|not a file written by torch.save"):
        load_gan(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a refine GAN checkpoint"):
        load_gan(tmp_path / "other.pt")
    g_arch = arch_config("mlp", in_dim=3, out_dim=2, hidden=8, depth=2)
    save_gan(tmp_path / "g.pt", generator=build_from_config(g_arch), generator_arch=g_arch, prior=NormalPrior((3,)))
    data = (tmp_path / "g.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_gan(tmp_path / "cut.pt")


def test_target_gradients_reach_z_only(rng):
    g = build_from_config(arch_config("mlp", in_dim=2, out_dim=2, hidden=8, depth=1))
    d = build_from_config(arch_config("mlp", in_dim=2, out_dim=1, hidden=8, depth=1))
    target = LatentTarget(LatentGenerator(g, NormalPrior((2,))), DiscriminatorRatio(d))
    z = torch.randn(5, 2, generator=rng)
    lp, grad, _ = target.value_and_grad(z)
    assert grad.shape == z.shape and all(p.grad is None for p in [*g.parameters(), *d.parameters()])
    # The gradient agrees with finite differences of log_density.
    eps = 1e-3
    e0 = torch.zeros_like(z)
    e0[:, 0] = eps
    fd = (target.log_density(z + e0) - target.log_density(z - e0)) / (2 * eps)
    assert torch.allclose(fd, grad[:, 0], atol=1e-2)


def test_wrap_and_sample_from_python():
    torch.manual_seed(0)
    gnet, dnet = torch.nn.Linear(4, 2), torch.nn.Linear(2, 1)
    target = refine.wrap(gnet, latent_shape=4, discriminator=dnet, output="logit")
    res = refine.sample(target, "sir", 16, rng=torch.Generator().manual_seed(0), candidates=4)
    assert res.x.shape == (16, 2) and res.info["ess"] <= 1.0


def test_target_without_a_ratio_is_the_raw_generator(rng):
    G = LatentGenerator(torch.nn.Linear(2, 2), NormalPrior((2,)))
    target = LatentTarget(G)
    res = refine.sample(target, "none", n=5, rng=torch.Generator().manual_seed(0))
    assert res.x.shape == (5, 2)
    with pytest.raises(ConfigError, match="no density ratio"):
        target.log_weight(torch.zeros(3, 2))
    with pytest.raises(ConfigError, match="no density ratio"):
        target.check_differentiable()
    with pytest.raises(ConfigError, match="no density ratio"):
        refine.sample(target, "drs", n=5, rng=torch.Generator().manual_seed(0))
