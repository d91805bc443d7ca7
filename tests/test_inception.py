"""FID Inception loading (offline), the image-to-features pipeline, feature extraction and the
Inception Score.

The network's weights here are random (the real FID weights are not shipped): they are saved to a
temporary file and loaded back through the same code path as the real file. Inception runs at
299x299 on the CPU, so the whole module uses 7 image forward passes in total.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_fid.inception as pf_inception  # torchvision prepared by conftest's import of refine
import torch
from torch import nn

from refine.errors import CheckpointError, ConfigError, MissingWeightsError, NonFiniteError, ShapeError
from refine.metrics.features import extract_features, iter_features
from refine.metrics.fid import feature_statistics, frechet_distance
from refine.metrics.inception import (
    FEATURE_DIM,
    FID_WEIGHTS_FILE,
    NUM_CLASSES,
    WEIGHTS_ENV,
    FIDInceptionV3,
    build_fid_inception,
    find_inception_weights,
    inception_features,
    load_inception,
    to_inception_input,
)
from refine.metrics.inception_score import IS_MEAN, IS_STD, inception_score


def _no_download(*args, **kwargs):
    raise AssertionError("a download was attempted")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Every test: downloads fail loudly, no env var, and an empty torch hub directory."""
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    monkeypatch.setattr(pf_inception, "load_state_dict_from_url", _no_download)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random FID-Inception weights saved under the real file name; returns (path, state_dict)."""
    net = build_fid_inception()
    g = torch.Generator().manual_seed(0)
    # He initialisation keeps activations O(1) through the 94 conv+BN+ReLU layers, so that the
    # features are far from zero and the comparisons below are meaningful.
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
    nn.init.normal_(net.fc.weight, std=0.05, generator=g)
    path = tmp_path_factory.mktemp("weights") / FID_WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


@pytest.fixture(scope="module")
def net(weights):
    return load_inception(weights[0])


@pytest.fixture(scope="module")
def images():
    """Three 16x16 RGB images in [-1, 1]; the first is grey (three equal channels)."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    x[0] = x[0, :1].expand(3, -1, -1)
    return x


@pytest.fixture(scope="module")
def pipeline(net, images):
    """Features and logits of ``images`` through the public pipeline (batches of 2 and 1)."""
    return inception_features(net, images, value_range=(-1.0, 1.0), batch_size=2, with_logits=True, progress=False)


# --------------------------------------------------------------------------- finding the weights


def test_find_weights_by_path_env_and_hub(tmp_path, monkeypatch):
    given, env, hub = (tmp_path / d for d in ("given", "env", "torch_home/hub/checkpoints"))
    for d in (given, env, hub):
        d.mkdir(parents=True)
        (d / FID_WEIGHTS_FILE).write_bytes(b"")
    assert find_inception_weights() == hub / FID_WEIGHTS_FILE  # TORCH_HOME points at tmp_path/torch_home
    monkeypatch.setenv(WEIGHTS_ENV, str(env / FID_WEIGHTS_FILE))
    assert find_inception_weights() == env / FID_WEIGHTS_FILE
    assert find_inception_weights(given / FID_WEIGHTS_FILE) == given / FID_WEIGHTS_FILE
    assert find_inception_weights(given) == given / FID_WEIGHTS_FILE  # a directory holding the file


def test_missing_weights_error_names_the_file_and_where_to_put_it(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        load_inception()
    message = str(info.value)
    assert FID_WEIGHTS_FILE in message and WEIGHTS_ENV in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in message
    assert "\n" not in message
    assert isinstance(info.value, FileNotFoundError)


def test_explicit_locations_do_not_fall_back(tmp_path, monkeypatch):
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / FID_WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(MissingWeightsError, match="given path"):
        find_inception_weights(tmp_path / "nowhere.pth")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(MissingWeightsError, match=WEIGHTS_ENV):
        find_inception_weights()


# --------------------------------------------------------------------------- loading


def test_load_by_path_and_by_env(weights, net, monkeypatch):
    path, state = weights
    assert isinstance(net, FIDInceptionV3) and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    for key, value in net.net.state_dict().items():
        assert torch.equal(value, state[key]), key
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    from_env = load_inception()
    assert torch.equal(from_env.net.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])


def test_unusable_weights_files(tmp_path, weights):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_inception(junk)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in weights[1].items() if not k.startswith("Mixed_7c")}, partial)
    with pytest.raises(CheckpointError, match="missing"):
        load_inception(partial)


# --------------------------------------------------------------------------- inputs


def test_value_ranges_are_mapped_to_minus_one_one():
    g = torch.Generator().manual_seed(2)
    x01 = torch.rand(2, 3, 5, 5, generator=g)
    want = 2 * x01 - 1
    assert torch.equal(to_inception_input(x01, (0, 1)), want)
    assert torch.allclose(to_inception_input(want, (-1, 1)), want, atol=1e-7)
    as_bytes = (x01 * 255).round().to(torch.uint8)
    assert torch.allclose(to_inception_input(as_bytes, (0, 255)), as_bytes.float() / 127.5 - 1, atol=1e-6)


def test_undeclared_ranges_are_errors(net):
    with pytest.raises(ConfigError, match=r"value_range=\(0, 1\)"):
        to_inception_input(torch.full((1, 3, 4, 4), -0.5), (0, 1))
    with pytest.raises(ConfigError, match="high > low"):
        to_inception_input(torch.zeros(1, 3, 4, 4), (1, 0))
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        net(torch.full((1, 3, 4, 4), 200.0))
    with pytest.raises(ShapeError, match="1 or 3"):
        net(torch.zeros(1, 4, 4, 4))


# --------------------------------------------------------------------------- the pipeline


def test_pipeline_outputs(pipeline):
    features, logits = pipeline
    assert features.shape == (3, FEATURE_DIM) and logits.shape == (3, NUM_CLASSES)
    assert features.dtype == torch.float32
    assert torch.isfinite(features).all() and torch.isfinite(logits).all()
    assert features.std(dim=0).mean() > 1e-3 * features.abs().mean()  # images give different features


def test_same_network_as_pytorch_fid(weights, pipeline, images, monkeypatch):
    # pytorch-fid's own InceptionV3, with its weight download answered by our random weights.
    monkeypatch.setattr(pf_inception, "load_state_dict_from_url", lambda *a, **k: dict(weights[1]))
    theirs = pf_inception.InceptionV3([3]).eval()
    # Their input convention is [0, 1]; feed the images in reverse order as a single batch.
    with torch.inference_mode():
        their_features = theirs((images.flip(0) + 1) / 2)[0].flatten(1)
    ours = pipeline[0].flip(0)
    scale = ours.abs().max()
    assert torch.allclose(their_features, ours, rtol=1e-4, atol=1e-5 * scale)
    # FID over the same images in another order and batching, from the other implementation:
    # zero up to the float32 noise of the features. A relative feature error e changes each term
    # by about e^2 times its size; e <= 1e-4 (checked above) gives <= 1e-8 of the trace.
    mu1, s1 = feature_statistics(ours)
    mu2, s2 = feature_statistics(their_features)
    assert frechet_distance(mu1, s1, mu2, s2) < 1e-6 * float(np.trace(s1))


def test_one_channel_images_are_repeated(net, pipeline, images):
    grey = images[:1, :1]  # (1, 1, 16, 16): the first image, which has three equal channels
    features = inception_features(net, grey, value_range=(-1.0, 1.0), progress=False)
    scale = pipeline[0].abs().max()
    assert torch.allclose(features[0], pipeline[0][0], rtol=1e-4, atol=1e-5 * scale)


def test_inception_score_of_pipeline_logits(pipeline):
    logits = pipeline[1]
    mean, std = inception_score(logits, splits=2, rng=torch.Generator().manual_seed(0))
    assert 1.0 <= mean <= 2.0 + 1e-9 and std >= 0.0  # at most the largest split size (2 samples)
    assert math.isfinite(mean) and math.isfinite(std)


# --------------------------------------------------------------------------- features


class _Tiny(nn.Module):
    def __init__(self, with_logits: bool = False):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.with_logits = with_logits

    def forward(self, x):
        f = self.lin(x)
        return (f, f[:, :2] * 2) if self.with_logits else f


def test_extract_features_from_tensors_and_batches():
    m = _Tiny(with_logits=True).eval()
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = m.lin(x)
    f = extract_features(m, x, batch_size=4, progress=False)
    assert torch.allclose(f, want)
    labelled = [(x[:6], torch.zeros(6)), (x[6:], torch.zeros(4))]
    f2, logits = extract_features(m, labelled, with_logits=True, progress=False)
    assert torch.allclose(f2, want) and torch.allclose(logits, 2 * want[:, :2])
    f3 = extract_features(m, (b for b in x.split(3)), transform=lambda b: b * 0 + 1, progress=False)
    assert torch.allclose(f3, m.lin.bias.detach() + m.lin.weight.detach().sum(1).expand(10, -1))
    assert [tuple(b.shape) for b in iter_features(m, x.numpy(), batch_size=7, progress=False)] == [(7, 4), (3, 4)]
    # Outputs are ordinary tensors: they can enter autograd later.
    w = torch.ones(4, requires_grad=True)
    (f * w).sum().backward()
    assert w.grad is not None


def test_extract_features_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ConfigError, match="training mode"):
        extract_features(_Tiny(), x, progress=False)
    with pytest.raises(ConfigError, match="single tensor"):
        extract_features(_Tiny().eval(), x, with_logits=True, progress=False)
    x[1, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="batch 0"):
        extract_features(_Tiny().eval(), x, progress=False)
    with pytest.raises(ShapeError, match="no data"):
        extract_features(_Tiny().eval(), [], progress=False)


# --------------------------------------------------------------------------- Inception Score


def test_is_result_keys_are_stable():
    assert (IS_MEAN, IS_STD) == ("is_mean", "is_std")


def test_is_is_one_for_identical_predictions():
    row = torch.randn(NUM_CLASSES, generator=torch.Generator().manual_seed(4))
    mean, std = inception_score(row.expand(50, -1), rng=torch.Generator().manual_seed(0))
    # Every p(y|x) equals p(y): each KL is a sum of p * (log p - log p) = 0 up to rounding.
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("classes,splits", [(20, 10), (NUM_CLASSES, 1)])
def test_is_equals_number_of_classes_for_confident_balanced_predictions(classes, splits):
    # Each split holds every class once, predicted with a logit margin of 40: p(y|x) is one-hot up to
    # (C - 1) e^-40 < 5e-15, so KL = log C up to ~1e-12 and IS = C up to C * 1e-12.
    labels = torch.arange(classes).repeat(splits)
    logits = torch.zeros(len(labels), NUM_CLASSES, dtype=torch.float64)
    logits[torch.arange(len(labels)), labels] = 40.0
    mean, std = inception_score(logits, splits=splits)
    assert mean == pytest.approx(classes, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9 * classes)


def test_is_matches_definition_and_seeded_shuffle():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(103, 30, generator=g, dtype=torch.float64) * 3
    p = torch.softmax(logits, 1).numpy()
    want = []
    for k in range(4):
        part = p[k * 103 // 4 : (k + 1) * 103 // 4]
        want.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(part.mean(0))), 1))))
    mean, std = inception_score(logits, splits=4)
    assert mean == pytest.approx(np.mean(want), rel=1e-12) and std == pytest.approx(np.std(want), rel=1e-9)
    a = inception_score(logits, splits=4, rng=torch.Generator().manual_seed(7))
    assert a == inception_score(logits, splits=4, rng=torch.Generator().manual_seed(7))
    assert a != (mean, std)  # the shuffle changes which samples share a split
    whole = inception_score(logits, splits=1)[0]
    assert inception_score(logits.flip(0).numpy(), splits=1)[0] == pytest.approx(whole, rel=1e-12)
    assert 1.0 <= whole <= 30.0


def test_is_errors():
    with pytest.raises(ShapeError, match="at least 10 samples"):
        inception_score(torch.zeros(5, 4))
    with pytest.raises(ShapeError, match=r"\(N, C\)"):
        inception_score(torch.zeros(20))
    with pytest.raises(NonFiniteError):
        inception_score(torch.full((20, 4), float("nan")))
    with pytest.raises(ConfigError, match="splits"):
        inception_score(torch.zeros(20, 4), splits=0)
