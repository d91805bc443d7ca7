"""DRE-F-SP: the SP loss, the ratio head, the feature network and the ratio file."""

from __future__ import annotations

import math

import pytest
import torch

import refine
from refine.errors import CheckpointError, ConfigError, ShapeError
from refine.io import save_feature_ratio
from refine.nets import arch_config, build
from refine.ratio.feature import FeatureRatio, RatioHead, sp_loss
from refine.ratio.fit_feature import fit_ratio_head, train_feature_net

TINY_RESNET = dict(num_classes=3, feature_dim=8, widths=(4, 4, 8, 8), stem_stride=2)


def _rng(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- the SP loss
def _discrete_case():
    # Atoms 0..3 with generator probabilities q and data probabilities p, as samples with exact frequencies.
    q_counts = torch.tensor([40, 30, 20, 10])
    p_counts = torch.tensor([10, 20, 30, 40])
    fake_idx = torch.repeat_interleave(torch.arange(4), q_counts)
    real_idx = torch.repeat_interleave(torch.arange(4), p_counts)
    true = (p_counts.double() / p_counts.sum()) / (q_counts.double() / q_counts.sum())
    return fake_idx, real_idx, true


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_sp_loss_minimiser_is_the_true_ratio(lam):
    fake_idx, real_idx, true = _discrete_case()
    r = torch.ones(4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [r], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = sp_loss(r[real_idx], r[fake_idx], lam)
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(r.detach(), true, atol=1e-6), (r, true)
    # and it is a minimum: moving any coordinate raises the loss
    base = float(sp_loss(true[real_idx], true[fake_idx], lam))
    for k in range(4):
        for eps in (-0.05, 0.05):
            moved = true.clone()
            moved[k] += eps
            assert float(sp_loss(moved[real_idx], moved[fake_idx], lam)) > base


def test_sp_loss_gradient_vanishes_only_at_the_ratio():
    fake_idx, real_idx, true = _discrete_case()
    for r0 in (true, true * 1.3):
        r = r0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(sp_loss(r[real_idx], r[fake_idx]), r)
        if r0 is true:
            assert g.abs().max() < 1e-12
        else:
            assert (g > 0).all()  # above the ratio, lowering r lowers the loss


# --------------------------------------------------------------------------- the ratio head
def _gaussian_features(n, shift, dim=8, seed=0):
    g = _rng(seed)
    return torch.randn(n, dim, generator=g) + shift


def test_ratio_head_training_lowers_the_loss_and_recovers_the_ratio():
    # real ~ N(0.5, I), generated ~ N(0, I) in 8-D: log r(x) = 0.5 * sum(x) - 8 * 0.125
    f_real, f_fake = _gaussian_features(2000, 0.5, seed=1), _gaussian_features(2000, 0.0, seed=2)
    v_real, v_fake = _gaussian_features(1000, 0.5, seed=3), _gaussian_features(1000, 0.0, seed=4)
    head, cfg, report = fit_ratio_head(
        f_real, f_fake, v_real, v_fake, lambdas=(0.0, 0.1), hidden=(32,), epochs=6, batch_size=128, rng=_rng(5)
    )
    assert cfg["name"] == "ratio-head" and report["lambda"] in (0.0, 0.1)
    # validation SP loss of the constant ratio 1 is sigmoid(1) - softplus(1) + ... ; training must beat it
    ones_r, ones_f = torch.ones(len(v_real)), torch.ones(len(v_fake))
    assert report["val_loss"] < float(sp_loss(ones_r, ones_f)) - 0.01
    ratio_vals = torch.nn.functional.softplus(head(v_fake))
    true = torch.exp(0.5 * v_fake.sum(1) - 1.0)
    # the estimate tracks the true ratio: rank correlation well above chance (0 for an uninformative head)
    rank = lambda t: t.argsort().argsort().double()
    rho = torch.corrcoef(torch.stack([rank(ratio_vals), rank(true)]))[0, 1]
    assert rho > 0.8, rho
    assert 0.5 < report["val_mean_r_fake"] < 1.5  # E_G[r] = 1 for the true ratio


def test_the_kept_head_is_normalised_when_some_lambda_is():
    """E_G[r] = 1 for a density ratio: the lowest validation loss among heads within norm_tol of 1 wins,
    even over a lower loss that is not normalised; with none normalised, the lowest loss is kept with a warning."""
    from refine.ratio.fit_feature import choose_normalised_head

    rows = [
        ("h0", {"lambda": 0.0, "val_loss": -0.30, "val_mean_r_fake": 0.475}),
        ("h1", {"lambda": 0.1, "val_loss": -0.28, "val_mean_r_fake": 0.93}),
        ("h2", {"lambda": 1.0, "val_loss": -0.25, "val_mean_r_fake": 1.01}),
    ]
    (head, row), normalised, warning = choose_normalised_head(rows, 0.1)
    assert head == "h1" and normalised and warning is None
    (head, row), normalised, warning = choose_normalised_head(
        rows[:1] + [("h3", {**rows[1][1], "val_mean_r_fake": 0.7})], 0.1
    )
    assert head == "h0" and not normalised and "0: 0.475" in warning and "kept lambda 0, the lowest" in warning
    with pytest.raises(ConfigError):
        fit_ratio_head(
            torch.randn(64, 4),
            torch.randn(64, 4),
            torch.randn(8, 4),
            torch.randn(8, 4),
            epochs=1,
            batch_size=8,
            norm_tol=0.0,
        )


def test_fit_ratio_head_report_says_whether_it_is_normalised():
    f_real, f_fake = _gaussian_features(512, 0.5, seed=1), _gaussian_features(512, 0.0, seed=2)
    v_real, v_fake = _gaussian_features(256, 0.5, seed=3), _gaussian_features(256, 0.0, seed=4)
    _, _, report = fit_ratio_head(
        f_real, f_fake, v_real, v_fake, lambdas=(0.0, 1.0), hidden=(16,), epochs=2, batch_size=64, rng=_rng(5)
    )
    assert report["normalised"] == (abs(report["val_mean_r_fake"] - 1) <= report["norm_tol"])
    assert report["normalised"] or "warning" in report


def test_fit_ratio_head_rejects_bad_inputs():
    f = torch.randn(64, 4)
    with pytest.raises(ConfigError):
        fit_ratio_head(f, f, f, f, lambdas=(-1.0,), epochs=1, batch_size=8)
    with pytest.raises(ShapeError):
        fit_ratio_head(f, torch.randn(64, 5), f, f, epochs=1, batch_size=8)
    with pytest.raises(ConfigError):
        fit_ratio_head(f, f, f, f, activation="exp", epochs=1, batch_size=8)


# --------------------------------------------------------------------------- the feature network
@pytest.mark.parametrize("channels", [1, 3])
def test_feature_net_runs_on_1_and_3_channels(channels):
    net = build("resnet34-features", in_channels=channels, **TINY_RESNET).eval()
    assert sum(1 for _ in net.body.layer3) == 6  # ResNet-34 stages: 3, 4, 6, 3 blocks
    x = torch.rand(2, channels, 28, 28) * 2 - 1
    assert net(x).shape == (2, 3)
    f = net.features(x)
    assert f.shape == (2, 8) and (f >= 0).all()
    with pytest.raises(ShapeError):
        net.features(torch.zeros(2, 4 - channels if channels == 3 else 3, 28, 28))


def test_train_feature_net_returns_a_frozen_classifier():
    g = _rng(0)
    labels = torch.arange(16) % 3
    x = torch.randint(0, 256, (16, 1, 16, 16), generator=g, dtype=torch.uint8)
    net, report = train_feature_net(
        x,
        labels,
        arch=arch_config("resnet34-features", in_channels=1, **TINY_RESNET),
        epochs=1,
        batch_size=8,
        val=(x, labels),
        rng=_rng(1),
    )
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert len(report["history"]) == 1 and math.isfinite(report["history"][0]["loss"]) and 0 <= report["val_acc"] <= 1
    with pytest.raises(refine.errors.DataError):  # labels beyond the classifier's classes
        train_feature_net(
            x, labels + 5, arch=arch_config("resnet34-features", in_channels=1, **TINY_RESNET), epochs=1, batch_size=8
        )


# --------------------------------------------------------------------------- the ratio object and its file
def _tiny_ratio(channels=1, activation="softplus"):
    fnet = build("resnet34-features", in_channels=channels, **TINY_RESNET).eval()
    head = RatioHead(8, (16,)).eval()
    return FeatureRatio(fnet, head, activation=activation, image_size=28)


def test_feature_ratio_log_is_finite_and_differentiable_for_extreme_heads():
    ratio = _tiny_ratio()
    with torch.no_grad():
        ratio.head.net[-1].bias.fill_(-500.0)  # softplus(t) underflows to 0 in float32 here
    x = (torch.rand(3, 1, 28, 28) * 2 - 1).requires_grad_(True)
    lr = ratio.log_ratio(x)
    assert lr.shape == (3,) and torch.isfinite(lr).all() and (lr < -400).all()
    (g,) = torch.autograd.grad(lr.sum(), x)
    assert torch.isfinite(g).all()
    relu = _tiny_ratio(activation="relu")
    with torch.no_grad():
        relu.head.net[-1].bias.fill_(-500.0)
    assert torch.allclose(relu.log_ratio(x.detach()), torch.full((3,), math.log(1e-12)))


def test_feature_ratio_resizes_other_image_sizes():
    ratio = _tiny_ratio()
    assert ratio.log_ratio(torch.zeros(2, 1, 32, 32)).shape == (2,)
    with pytest.raises(ShapeError):
        ratio.log_ratio(torch.zeros(2, 784))


def test_feature_sp_file_roundtrip(tmp_path):
    ratio = _tiny_ratio()
    path = tmp_path / "r.pt"
    save_feature_ratio(
        path,
        ratio,
        feature_arch=arch_config("resnet34-features", in_channels=1, **TINY_RESNET),
        head_arch=arch_config("ratio-head", in_dim=8, hidden=[16], dropout=0.0),
        meta={"note": "test"},
    )
    loaded = refine.load_ratio(path)
    assert isinstance(loaded, FeatureRatio) and loaded.differentiable
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    assert torch.allclose(loaded.log_ratio(x), ratio.log_ratio(x), atol=1e-6)
    obj = torch.load(path, weights_only=True)
    obj["head"]["state"] = {k: v[:1] for k, v in obj["head"]["state"].items()}
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        refine.load_ratio(tmp_path / "bad.pt")


def test_feature_ratio_drives_the_samplers():
    """Rejection, MH and SIR take a DRE-F-SP ratio like any other; gradients reach z through it."""
    g = build("dcgan-g", image_size=28, channels=1, nz=8, width=4).eval()
    target = refine.wrap(g, latent_shape=(8, 1, 1), output_range="[-1,1]", ratio=_tiny_ratio())
    for method, opts in (
        ("rs", {"burn_in": 64, "batch_size": 64}),
        ("mh", {"k": 3, "batch_size": 64}),
        ("sir", {"candidates": 4}),
    ):
        res = refine.sample(target, method, n=8, rng=_rng(0), **opts)
        assert res.x.shape == (8, 1, 28, 28) and torch.isfinite(res.x).all()
    target.check_differentiable()
    _, grad, _ = target.value_and_grad(torch.randn(2, 8, 1, 1))
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    res = refine.sample(target, "ddls", n=4, rng=_rng(0), steps=2)  # a gradient method through the feature network
    assert res.x.shape == (4, 1, 28, 28) and torch.isfinite(res.x).all()


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks run fastest on one thread
