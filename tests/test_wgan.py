"""WGAN-GP training (method ``wgan-gp``) and DCD's critic fine-tuning by contrastive divergence."""

import math

import pytest
import torch

from refine.errors import ConfigError
from refine.generator import LatentGenerator, NormalPrior, UniformPrior
from refine.io import load_gan
from refine.nets import build
from refine.ratio import DiscriminatorRatio
from refine.samplers.langevin import LangevinConfig
from refine.train import get_method
from refine.train.checkpointing import restore_training_state, training_state
from refine.train.toy2d import save_toy_checkpoint, train_toy
from refine.train.wgan import WGAN_GP_TOY, WGANGP, finetune_critic_cd


def tiny(seed=0):
    torch.manual_seed(seed)
    g = build("mlp", in_dim=2, out_dim=2, hidden=8, depth=1)
    d = build("mlp", in_dim=2, out_dim=1, hidden=8, depth=1)
    return LatentGenerator(g, NormalPrior((2,))), d


def params(m):
    return [p.detach().clone() for p in m.parameters()]


def test_registered_with_the_toy_settings():
    cls = get_method("wgan-gp")
    assert cls is WGANGP and cls.discriminator_output == "critic"
    assert WGAN_GP_TOY == {"lr": 1e-4, "betas": (0.5, 0.9), "d_steps": 5, "gp_weight": 0.1}
    G, d = tiny()
    m = WGANGP(G, d)
    assert m.d_steps == 5 and m.gp_weight == 0.1
    assert m.opt_d.defaults["lr"] == 1e-4 and m.opt_d.defaults["betas"] == (0.5, 0.9)


def test_one_critic_update_per_batch_and_a_generator_update_every_d_steps():
    G, d = tiny()
    m = WGANGP(G, d, d_steps=3)
    rng = torch.Generator().manual_seed(0)
    real = torch.randn(16, 2, generator=rng) + 3
    g0 = params(G.net)
    for i in range(1, 7):
        d_before = params(d)
        logs = m.step(real, rng=rng)
        assert all(math.isfinite(v) for v in logs.values())
        assert any(not torch.equal(a, b) for a, b in zip(d_before, params(d)))  # the critic moves every call
        g_moved = any(not torch.equal(a, b) for a, b in zip(g0, params(G.net)))
        assert g_moved == (i >= 3), i  # the generator first moves on the 3rd call
        if i == 3:
            assert "loss_g" in logs


def test_the_penalty_pulls_critic_gradients_toward_norm_one():
    """With a large penalty weight and no Wasserstein signal (real = fake distribution), the
    critic's gradient norm at interpolates moves toward 1."""
    G, d = tiny(1)
    with torch.no_grad():
        for p in d.parameters():
            p.mul_(3.0)  # start with steep gradients
    m = WGANGP(G, d, gp_weight=10.0, lr=3e-2, betas=(0.5, 0.9))
    rng = torch.Generator().manual_seed(2)

    def grad_norm():  # at generated points, where the interpolates lie
        with torch.no_grad():
            x = G(G.sample_latent(256, rng=torch.Generator().manual_seed(9)))
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(d(x).sum(), x)
        return (g.norm(dim=1) - 1).abs().mean().item()

    before = grad_norm()
    for _ in range(30):
        with torch.no_grad():
            real = G(G.sample_latent(32, rng=rng))
        m.critic_step(real, rng=rng)
    assert grad_norm() < 0.5 * before


def test_train_toy_saves_a_critic_checkpoint_and_resumes_its_counters(tmp_path):
    run = train_toy(
        "grid25-wgan",
        epochs=1,
        n_train=64,
        batch_size=16,
        method="wgan-gp",
        hidden=8,
        depth=1,
        rng=torch.Generator().manual_seed(0),
        init_seed=0,
        method_options={"lr": 1e-4, "betas": [0.5, 0.9]},
    )
    assert all(math.isfinite(v) for v in run.meta["history"][0].values())
    path = tmp_path / "wgan.pt"
    save_toy_checkpoint(path, run)
    gan = load_gan(path)
    assert gan.ratio.output == "critic"
    G, d = tiny()
    m = WGANGP(G, d, d_steps=5)
    real = torch.randn(8, 2)
    for _ in range(3):
        m.step(real, rng=torch.Generator().manual_seed(0))
    state = training_state(m, epoch=1, rng=None, history=[])
    G2, d2 = tiny()
    m2 = WGANGP(G2, d2, d_steps=5)
    restore_training_state(m2, state, rng=None)
    assert m2._calls == 3


def test_train_toy_uniform_prior_and_wider_critic(tmp_path):
    """The DOT paper's 2-D setting: z ~ U[-1, 1]^2 in training and in the checkpoint, a wider critic, leaky ReLU."""
    run = train_toy(
        "grid25-wgan",
        epochs=1,
        n_train=64,
        batch_size=16,
        method="wgan-gp",
        hidden=8,
        disc_hidden=12,
        depth=1,
        activation="leaky_relu",
        prior="uniform",
        rng=torch.Generator().manual_seed(0),
        init_seed=0,
    )
    assert isinstance(run.generator.prior, UniformPrior)
    z = run.generator.sample_latent(500, rng=torch.Generator().manual_seed(1))
    assert z.min() >= -1 and z.max() <= 1 and z.min() < -0.9
    assert run.archs["discriminator"]["kwargs"]["hidden"] == 12 and run.archs["generator"]["kwargs"]["hidden"] == 8
    assert run.meta["prior"] == "uniform" and run.meta["disc_hidden"] == 12
    path = tmp_path / "wgan.pt"
    save_toy_checkpoint(path, run)
    assert isinstance(load_gan(path).generator.prior, UniformPrior)
    with pytest.raises(ConfigError, match="prior"):
        train_toy(
            "grid25-wgan", epochs=1, n_train=16, batch_size=16, method="wgan-gp", hidden=4, depth=1, prior="cauchy"
        )


@pytest.mark.parametrize("opts", [{"d_steps": 0}, {"lr": -1.0}, {"gp_weight": -0.1}, {"betas": (0.5,)}])
def test_bad_options_are_config_errors(opts):
    G, d = tiny()
    with pytest.raises(ConfigError):
        WGANGP(G, d, **opts)


def test_cd_finetuning_separates_real_from_langevin_negatives():
    """Real data at (2, 2), generator outputs near the origin: the hinge loss falls and the
    critic scores real points above the negatives."""
    G, d = tiny(3)
    ratio = DiscriminatorRatio(d, "critic")
    flags = [p.requires_grad for p in d.parameters()]
    real = torch.randn(256, 2, generator=torch.Generator().manual_seed(4)) * 0.1 + 2.0
    rep = finetune_critic_cd(
        G,
        ratio,
        real,
        iterations=30,
        batch_size=32,
        lr=2e-2,
        langevin=LangevinConfig(step_size=1e-3, steps=3),
        rng=torch.Generator().manual_seed(5),
    )
    hist = rep["history"]
    first = sum(h["loss"] for h in hist[:5]) / 5
    last = sum(h["loss"] for h in hist[-5:]) / 5
    assert last < 0.5 * first
    assert hist[-1]["score_real"] > hist[-1]["score_neg"]
    assert rep["g_evals"] == 30 * 32 and rep["d_evals"] == 30 * 32 * (4 + 2)
    assert [p.requires_grad for p in d.parameters()] == flags
    with pytest.raises(ConfigError):
        finetune_critic_cd(G, ratio, real, iterations=0)
    with pytest.raises(ConfigError):
        finetune_critic_cd(G, object(), real, iterations=1)
