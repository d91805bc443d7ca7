"""Training methods from the literature: one step each on tiny networks, checkpoints, and the maths of the unrolled steps."""

import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from refine.cli import app
from refine.cli.fit_ratio import FRESH_LR
from refine.data.toy2d import get_mixture
from refine.errors import ConfigError
from refine.generator import LatentGenerator, NormalPrior
from refine.io import load_gan
from refine.nets import build
from refine.train import get_method
from refine.train.gan import REFIT_PATIENCE
from refine.train.gan_gp import penalty_points
from refine.train.lbt import VAEEstimator
from refine.train.losses import d_loss_ns, g_loss_ns
from refine.train.toy2d import load_extra_networks, save_toy_checkpoint, train_toy
from refine.train.unrolled import UnrolledGAN, differentiable_steps

METHODS = ["gan", "gan-gp", "unrolled", "veegan", "lbt", "lbt-gan", "alphagan"]
X_DISCRIMINATOR = {
    "gan": True,
    "gan-gp": True,
    "unrolled": True,
    "veegan": False,
    "lbt": False,
    "lbt-gan": True,
    "alphagan": True,
}
EXTRA = {
    "veegan": {"joint_discriminator", "reconstructor"},
    "lbt": {"estimator_encoder", "estimator_decoder"},
    "lbt-gan": {"estimator_encoder", "estimator_decoder"},
    "alphagan": {"encoder", "code_discriminator"},
}
TINY_OPTIONS = {
    "unrolled": {"unroll": 2},
    "lbt": {"unroll": 2},
    "lbt-gan": {"unroll": 2},
    "gan-gp": {"penalty": "dragan"},
}


@pytest.mark.parametrize("method", METHODS)
def test_one_step_and_a_loadable_checkpoint(method, tmp_path):
    run = train_toy(
        "ring8",
        epochs=1,
        n_train=16,
        batch_size=8,
        method=method,
        hidden=8,
        depth=1,
        latent_dim=3,
        rng=torch.Generator().manual_seed(0),
        init_seed=0,
        method_options=TINY_OPTIONS.get(method),
    )
    hist = run.meta["history"]
    assert len(hist) == 1 and all(math.isfinite(v) for v in hist[0].values())
    assert (run.discriminator is not None) == X_DISCRIMINATOR[method]
    assert set(run.networks) == EXTRA.get(method, set())
    path = tmp_path / f"{method}.pt"
    save_toy_checkpoint(path, run, meta={"seed": 0})
    gan = load_gan(path)
    assert gan.generator.prior.shape == (3,)
    assert (gan.ratio is not None) == X_DISCRIMINATOR[method]
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(gan.generator(z), run.generator(z))
    extra = load_extra_networks(gan.config)
    assert set(extra) == EXTRA.get(method, set())
    for name, net in extra.items():
        for (k, a), b in zip(net.state_dict().items(), run.networks[name].state_dict().values()):
            assert torch.equal(a, b.cpu()), (name, k)


def test_unknown_and_bad_options_are_config_errors():
    for method, opts in [
        ("unrolled", {"unrol": 3}),
        ("unrolled", {"unroll": -1}),
        ("lbt", {"gan_weight": 1.0}),
        ("lbt", {"unroll": 0}),
        ("gan-gp", {"penalty": "zero-centred"}),
        ("alphagan", {"adv_loss": "hinge"}),
    ]:
        with pytest.raises(ConfigError):
            train_toy(
                "ring8", epochs=1, n_train=16, batch_size=8, method=method, hidden=4, depth=1, method_options=opts
            )


def test_penalty_points_lie_where_they_should(rng):
    real = torch.randn(64, 2, generator=rng)
    fake = torch.randn(64, 2, generator=rng) + 5
    pts = penalty_points("interpolates", real, fake, rng=rng)
    # on the segment real-fake: the residual from the line is zero
    t = ((pts - fake) * (real - fake)).sum(1) / (real - fake).pow(2).sum(1)
    assert torch.allclose(fake + t[:, None] * (real - fake), pts, atol=1e-5)
    assert ((t >= 0) & (t <= 1)).all()
    pts = penalty_points("dragan", real, fake, rng=rng, dragan_scale=0.5)
    delta = pts - real
    assert (delta >= 0).all() and (delta <= 0.5 * real.std() + 1e-6).all()


# --------------------------------------------------------------------------- the unrolled gradient
def _tiny_unrolled(unroll, rule, second_order, g_loss="ns"):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        gnet = build("mlp", in_dim=1, out_dim=2, hidden=3, depth=1, activation="tanh").double()
        dnet = build("mlp", in_dim=2, out_dim=1, hidden=4, depth=1, activation="tanh").double()
    G = LatentGenerator(gnet, NormalPrior((1,)))
    return UnrolledGAN(
        G, dnet, lr=1e-2, unroll=unroll, unroll_rule=rule, unroll_lr=0.5, second_order=second_order, g_loss=g_loss
    )


def _explicit_unrolled_loss(m: UnrolledGAN, z, real, flat_g, *, freeze_d_after=None, saddle=False):
    """L_G(theta_G, theta_D^k(theta_G)) written out step by step (SGD or Adam on a fresh state), as a function of flat G params."""
    gnet = m.G.net
    shapes = [p.shape for p in gnet.parameters()]
    sizes = [p.numel() for p in gnet.parameters()]
    gparams = dict(
        zip([n for n, _ in gnet.named_parameters()], [t.view(s) for t, s in zip(flat_g.split(sizes), shapes)])
    )
    fake = torch.func.functional_call(gnet, gparams, (z,))
    d = {k: v.detach().clone().requires_grad_(True) for k, v in m.D.named_parameters()}
    mom = {k: torch.zeros_like(v) for k, v in d.items()}
    vel = {k: torch.zeros_like(v) for k, v in d.items()}
    b1, b2 = m.betas
    for t in range(1, m.unroll + 1):
        out = lambda x: torch.func.functional_call(m.D, d, (x,))  # noqa: E731
        inner_fake = fake if freeze_d_after is None else freeze_d_after
        loss = d_loss_ns(out(real), out(inner_fake))
        grads = torch.autograd.grad(loss, list(d.values()), create_graph=True)
        new = {}
        for (k, p), g in zip(d.items(), grads):
            if m.unroll_rule == "sgd":
                new[k] = p - m.unroll_lr * g
            else:
                mom[k] = b1 * mom[k] + (1 - b1) * g
                vel[k] = b2 * vel[k] + (1 - b2) * g * g
                new[k] = p - m.unroll_lr * (mom[k] / (1 - b1**t)) / torch.sqrt(vel[k] / (1 - b2**t) + 1e-16)
        d = new
    if saddle:  # the paper's objective: minus the discriminator's loss at the unrolled parameters, real term included
        return -d_loss_ns(torch.func.functional_call(m.D, d, (real,)), torch.func.functional_call(m.D, d, (fake,)))
    return g_loss_ns(torch.func.functional_call(m.D, d, (fake,)))


@pytest.mark.parametrize("rule,g_loss", [("sgd", "ns"), ("adam", "ns"), ("adam", "saddle")])
def test_unrolled_gradient_matches_finite_differences_of_the_explicit_loss(rule, g_loss):
    """The saddle objective's gradient includes the real term through the unrolled discriminator."""
    m = _tiny_unrolled(3, rule, True, g_loss=g_loss)
    saddle = g_loss == "saddle"
    rng = torch.Generator().manual_seed(0)
    z = torch.randn(6, 1, generator=rng, dtype=torch.float64)
    real = torch.randn(6, 2, generator=rng, dtype=torch.float64)
    gparams = list(m.G.net.parameters())
    got = torch.cat([g.flatten() for g in torch.autograd.grad(m.unrolled_g_loss(z, real), gparams)])
    flat = torch.cat([p.detach().flatten() for p in gparams])
    # the explicit loss equals the method's at the current parameters
    assert torch.allclose(
        _explicit_unrolled_loss(m, z, real, flat, saddle=saddle), m.unrolled_g_loss(z, real), rtol=1e-12, atol=1e-12
    )
    h = 1e-6
    fd = torch.empty_like(flat)
    for i in range(len(flat)):
        e = torch.zeros_like(flat)
        e[i] = h
        fd[i] = (
            _explicit_unrolled_loss(m, z, real, flat + e, saddle=saddle).detach()
            - _explicit_unrolled_loss(m, z, real, flat - e, saddle=saddle).detach()
        ) / (2 * h)
    assert torch.allclose(got, fd, rtol=1e-6, atol=1e-9), (got, fd)


def test_saddle_objective_without_unrolling_is_the_minimax_generator_loss():
    rng = torch.Generator().manual_seed(2)
    z = torch.randn(6, 1, generator=rng, dtype=torch.float64)
    real = torch.randn(6, 2, generator=rng, dtype=torch.float64)
    # without unrolling the real term does not depend on theta_G: the minimax generator loss E log(1 - D(G(z))) = -E softplus(logit)
    plain = _tiny_unrolled(0, "adam", True, g_loss="saddle")
    gp = list(plain.G.net.parameters())
    minimax = torch.cat([g.flatten() for g in torch.autograd.grad(-F.softplus(plain.D(plain.G(z))).mean(), gp)])
    got0 = torch.cat([g.flatten() for g in torch.autograd.grad(plain.unrolled_g_loss(z, real), gp)])
    assert torch.allclose(got0, minimax, rtol=1e-12, atol=1e-14)
    with pytest.raises(ConfigError):
        _tiny_unrolled(1, "adam", True, g_loss="hinge")


# --------------------------------------------------------------------------- VEEGAN's unreconstructed noise
def test_veegan_eps_dim_leaves_the_last_latent_coordinates_out_of_f_and_d():
    run = train_toy(
        "ring8",
        epochs=1,
        n_train=16,
        batch_size=8,
        method="veegan",
        hidden=8,
        depth=1,
        latent_dim=4,
        rng=torch.Generator().manual_seed(0),
        init_seed=0,
        method_options={"eps_dim": 1, "rec_weight": 0.5},
    )
    assert all(math.isfinite(v) for v in run.meta["history"][0].values())
    assert (
        run.archs["reconstructor"]["kwargs"]["out_dim"] == 3
        and run.archs["joint_discriminator"]["kwargs"]["in_dim"] == 3 + 2
    )
    m = get_method("veegan")(run.generator, None, **run.networks, eps_dim=1)
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(m.code(z), z[:, :3])
    z2 = z.clone()
    z2[:, 3] += 1.0  # eps changes x but neither the code D sees nor the reconstruction target
    assert torch.equal(m.code(z2), m.code(z))
    for bad in (-1, 4):
        with pytest.raises(ConfigError):
            train_toy(
                "ring8",
                epochs=1,
                n_train=16,
                batch_size=8,
                method="veegan",
                hidden=4,
                depth=1,
                latent_dim=4,
                method_options={"eps_dim": bad},
            )


def test_veegan_stochastic_reconstructor_gives_d_full_rank_codes_for_data_pairs():
    """Algorithm 1 draws the data pairs' codes from p(z | x); a deterministic F(x) lies on a 2-D surface in the 8-D code space."""
    run = train_toy(
        "ring8",
        epochs=1,
        n_train=16,
        batch_size=8,
        method="veegan",
        hidden=8,
        depth=1,
        latent_dim=8,
        rng=torch.Generator().manual_seed(0),
        init_seed=0,
        method_options={"rec_std": 1.0},
    )
    x = get_mixture("ring8").sample(2000, rng=torch.Generator().manual_seed(1))
    eig = {}
    for std in (0.0, 1.0):
        m = get_method("veegan")(run.generator, None, **run.networks, rec_std=std)
        with torch.no_grad():
            codes = m.sample_code(x, rng=torch.Generator().manual_seed(2))
        eig[std] = torch.linalg.eigvalsh(torch.cov(codes.T.double()))
        if std:  # the noise around F(x): unit variance in every coordinate (each sample variance within 5 standard errors, 2000 draws)
            with torch.no_grad():
                resid = codes - m.reconstruct(x)
            assert ((resid.var(0) - 1).abs() < 5 * math.sqrt(2 / len(x))).all()
    # deterministic: a curved 2-D surface, so some directions carry (almost) no variance; stochastic: every direction >= about 1
    assert eig[0.0].min() < 0.01 and eig[1.0].min() > 0.5, eig
    seen = []
    m = get_method("veegan")(run.generator, None, **run.networks, rec_std=1.0)
    orig = m.sample_code
    m.sample_code = lambda v, rng=None: seen.append(len(v)) or orig(v, rng=rng)
    m.step(x[:8], rng=torch.Generator().manual_seed(3))
    assert seen == [8]  # the discriminator step draws the data pairs' codes through p(z | x)
    with pytest.raises(ConfigError):
        get_method("veegan")(run.generator, None, **run.networks, rec_std=-1.0)


def test_train_toy_activation_reaches_every_network():
    run = train_toy(
        "ring8",
        epochs=1,
        n_train=16,
        batch_size=8,
        method="veegan",
        hidden=4,
        depth=1,
        latent_dim=2,
        rng=torch.Generator().manual_seed(0),
        init_seed=0,
        activation="tanh",
    )
    assert all(a["kwargs"]["activation"] == "tanh" for a in run.archs.values())
    assert run.generator.net.activation == "tanh" and all(n.activation == "tanh" for n in run.networks.values())


def test_first_order_unrolling_drops_the_reaction_term_and_zero_unrolling_is_the_gan_gradient():
    rng = torch.Generator().manual_seed(1)
    z = torch.randn(6, 1, generator=rng, dtype=torch.float64)
    real = torch.randn(6, 2, generator=rng, dtype=torch.float64)

    def grad(m):
        gp = list(m.G.net.parameters())
        return torch.cat([g.flatten() for g in torch.autograd.grad(m.unrolled_g_loss(z, real), gp)])

    second, first, plain = (
        grad(_tiny_unrolled(3, "sgd", True)),
        grad(_tiny_unrolled(3, "sgd", False)),
        _tiny_unrolled(0, "sgd", True),
    )
    m = _tiny_unrolled(3, "sgd", False)
    flat = torch.cat([p.detach().flatten() for p in m.G.net.parameters()])
    with torch.no_grad():
        frozen = m.G(z)
    h, fd = 1e-6, torch.empty_like(flat)
    for i in range(len(flat)):
        e = torch.zeros_like(flat)
        e[i] = h
        fd[i] = (
            _explicit_unrolled_loss(m, z, real, flat + e, freeze_d_after=frozen).detach()
            - _explicit_unrolled_loss(m, z, real, flat - e, freeze_d_after=frozen).detach()
        ) / (2 * h)
    assert torch.allclose(first, fd, rtol=1e-6, atol=1e-9)
    assert (second - first).abs().max() > 1e-4  # the reaction term is really there
    gp = list(plain.G.net.parameters())
    gan_grad = torch.cat([g.flatten() for g in torch.autograd.grad(g_loss_ns(plain.D(plain.G(z))), gp)])
    assert torch.allclose(grad(plain), gan_grad, rtol=1e-12, atol=1e-14)


def test_differentiable_sgd_step_is_the_textbook_update():
    w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    a = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    out = differentiable_steps({"w": w}, lambda p: a * (p["w"] ** 2).sum(), 1, lr=0.1)
    # w1 = w - 0.1 * 2 a w = w (1 - 0.2 a); d sum(w1) / da = -0.2 * sum(w)
    assert torch.allclose(out["w"], w * (1 - 0.2 * a))
    (g,) = torch.autograd.grad(out["w"].sum(), a)
    assert torch.isclose(g, -0.2 * w.sum())


# --------------------------------------------------------------------------- LBT's estimator
def test_lbt_estimator_elbo_rises_on_its_data():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc = build("mlp", in_dim=2, out_dim=4, hidden=32, depth=2)
        dec = build("mlp", in_dim=2, out_dim=4, hidden=32, depth=2)
    vae = VAEEstimator(enc, dec, 2)
    rng = torch.Generator().manual_seed(5)
    data = get_mixture("ring8-lbt").sample(512, rng=rng)
    held = get_mixture("ring8-lbt").sample(4096, rng=rng)
    eps = torch.randn(4096, 2, generator=rng)

    def score():
        with torch.no_grad():
            e = vae(held, eps)
        return e.mean().item(), e.std().item() / math.sqrt(len(e))

    before, se0 = score()
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(150):
        loss = -vae.elbo(data, rng=rng).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after, se1 = score()
    # held-out ELBO from the same distribution: the rise must exceed 5 standard errors of the estimates
    assert after - before > 5 * math.hypot(se0, se1), (before, after, se0, se1)


def test_lbt_generator_learns_only_through_the_unrolled_estimator():
    run = train_toy(
        "ring8",
        epochs=1,
        n_train=16,
        batch_size=8,
        method="lbt",
        hidden=8,
        depth=1,
        rng=torch.Generator().manual_seed(0),
        init_seed=0,
        method_options={"unroll": 1},
    )
    cls = get_method("lbt")
    m = cls(
        run.generator,
        None,
        estimator_encoder=run.networks["estimator_encoder"],
        estimator_decoder=run.networks["estimator_decoder"],
        unroll=1,
    )
    real = get_mixture("ring8").sample(8, rng=torch.Generator().manual_seed(1))
    gp = list(run.generator.net.parameters())
    grads = torch.autograd.grad(m.teaching_loss(real, rng=torch.Generator().manual_seed(2)), gp)
    assert all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0


# --------------------------------------------------------------------------- the CLI path for a checkpoint without an x-discriminator
def test_cli_veegan_train_fit_ratio_sample(tmp_path):
    runner = CliRunner()
    ckpt, ratio = tmp_path / "veegan.pt", tmp_path / "ratio.pt"
    common = ["--device", "cpu", "--no-progress"]
    res = runner.invoke(
        app,
        [
            "train",
            "--method",
            "veegan",
            "--data",
            "ring8",
            "--epochs",
            "1",
            "--n-train",
            "256",
            "--batch-size",
            "64",
            "--hidden",
            "8",
            "--out",
            str(ckpt),
            *common,
        ],
    )
    assert res.exit_code == 0, res.output
    assert load_gan(ckpt).discriminator is None
    res = runner.invoke(
        app, ["sample", "--ckpt", str(ckpt), "--method", "drs", "-n", "10", "--out", str(tmp_path / "s0"), *common]
    )
    assert res.exit_code == 2 and "fit-ratio" in res.output
    res = runner.invoke(
        app,
        [
            "fit-ratio",
            "--ckpt",
            str(ckpt),
            "--epochs",
            "1",
            "--n-train",
            "256",
            "--batch-size",
            "64",
            "--out",
            str(ratio),
            *common,
        ],
    )
    assert res.exit_code == 0, res.output
    meta = torch.load(ratio, weights_only=True)["meta"]
    assert meta["fresh_discriminator"] and meta["lr"] == FRESH_LR and meta["patience"] == REFIT_PATIENCE
    res = runner.invoke(
        app,
        [
            "sample",
            "--ckpt",
            str(ckpt),
            "--ratio",
            str(ratio),
            "--method",
            "sir",
            "-o",
            "candidates=4",
            "-n",
            "20",
            "--out",
            str(tmp_path / "s1"),
            *common,
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s1" / "samples.npz").exists()
