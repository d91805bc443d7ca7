"""Class-conditional refinement on a 2-D problem with a closed-form conditional ratio.

``G(z, y) = z + mu_y`` with ``z ~ N(0, I)``; the data of class ``y`` is ``N(mu_y, s_y^2 I)``, so

    log r(x | y) = -|x - mu_y|^2 (1 / s_y^2 - 1) / 2 - 2 log s_y,

bounded above by ``log M_y = -2 log s_y`` (different per class), and exact rejection sampling of
class ``y`` gives ``N(mu_y, s_y^2 I)``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import refine
from refine.conditional import (
    ConditionalDiscriminatorRatio,
    ConditionalFunctionRatio,
    ConditionalGenerator,
    ConditionalTarget,
    class_plan,
    parse_classes,
    sample_conditional,
)
from refine.distributed import shard_seed
from refine.errors import ConfigError, RefineError, ShapeError
from refine.samplers import get_sampler, list_samplers

K = 3
MU = torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
S = torch.tensor([0.5, 0.7, 0.9])


def g_net(z, y):
    return z + MU[y]


def log_r(x, y):
    s = S[y]
    return -((x - MU[y]) ** 2).sum(1) * (1 / s**2 - 1) / 2 - 2 * torch.log(s)


def target() -> ConditionalTarget:
    return refine.wrap(g_net, latent_shape=2, num_classes=K, ratio=ConditionalFunctionRatio(log_r, K))


METHOD_OPTIONS = {
    "none": {},
    "rs": {},
    "drs": {},
    "mh": {"k": 20},
    "sir": {"candidates": 8},
    "ddls": {"steps": 5, "step_size": 1e-2},
    "dgflow": {"steps": 5},
    "dcd": {"steps": 5},
    "dot": {"steps": 5, "pairs": 20},
}


def test_every_method_is_covered():
    assert set(METHOD_OPTIONS) == set(list_samplers())


@pytest.mark.parametrize("method", sorted(METHOD_OPTIONS))
@pytest.mark.parametrize(
    "classes,expected",
    [("balanced", {0: 34, 1: 33, 2: 33}), ([2, 0], {2: 50, 0: 50}), (1, {1: 100}), ({0: 10, 2: 90}, {0: 10, 2: 90})],
)
def test_exact_class_proportions(method, classes, expected):
    res = refine.sample(
        target(), method, 100, rng=torch.Generator().manual_seed(0), classes=classes, **METHOD_OPTIONS[method]
    )
    assert res.x.shape == (100, 2) and res.y.shape == (100,)
    assert {c: int((res.y == c).sum()) for c in range(K)} == {c: expected.get(c, 0) for c in range(K)}
    assert res.info["counts"] == {str(c): m for c, m in expected.items()}
    # each sample really comes from its class: the class means are 4 apart, far beyond the spread
    nearest = torch.cdist(res.x, MU).argmin(1)
    assert (nearest == res.y).float().mean() > 0.97


def test_rejection_bound_is_estimated_per_class():
    res = refine.sample(target(), "rs", 3000, rng=torch.Generator().manual_seed(1))
    per = res.info["per_class"]
    for c in range(K):
        true_log_m = -2 * math.log(float(S[c]))
        # the burn-in maximum approaches log M_y from below; with 10,000 proposals the gap is small
        assert true_log_m - 0.05 < per[str(c)]["log_M"] <= true_log_m + 1e-6
    assert per["0"]["log_M"] > per["1"]["log_M"] > per["2"]["log_M"]


def test_exact_rs_draws_each_class_conditional():
    """Per class, RS gives N(mu_y, s_y^2 I): the sample variance within 5 standard errors (chi-square, 2n dof)."""
    n = 3000
    res = refine.sample(target(), "rs", n, rng=torch.Generator().manual_seed(2))
    for c in range(K):
        xc = res.x[res.y == c]
        m = len(xc)
        var = ((xc - MU[c]) ** 2).mean()  # known mean: var / s^2 ~ chi2(2m) / 2m, sd sqrt(2 / 2m)
        assert abs(float(var) / float(S[c]) ** 2 - 1) < 5 * math.sqrt(1 / m)
        assert float((xc.mean(0) - MU[c]).norm()) < 5 * float(S[c]) * math.sqrt(2 / m)


def test_seeds_per_class_are_reproducible_and_independent_of_the_other_classes():
    sampler = get_sampler("drs")
    a = sample_conditional(sampler, target(), 60, classes=[0, 2], seed=7)
    b = sample_conditional(sampler, target(), 30, classes=[2], seed=7)
    c = sample_conditional(sampler, target(), 60, classes=[0, 2], seed=7)
    assert torch.equal(a.x, c.x) and torch.equal(a.y, c.y)
    assert torch.equal(a.x[a.y == 2], b.x)
    assert a.info["per_class"]["2"]["seed"] == shard_seed(7, 2)


def test_class_plan():
    assert class_plan(10, "balanced", 3) == [(0, 4), (1, 3), (2, 3)]
    assert class_plan(5, [7, 3], 10) == [(7, 3), (3, 2)]
    assert class_plan(2, "balanced", 5) == [(0, 1), (1, 1)]
    assert class_plan(4, {1: 4, 0: 0}, 2) == [(1, 4)]
    assert parse_classes("3,7", 10) == [3, 7] and parse_classes("Balanced", 10) == "balanced"
    for bad in ([0, 0], [3], {0: 3}, [], "x,y", -1):
        with pytest.raises(ConfigError):
            class_plan(4, parse_classes(bad, 3), 3)


class _Gen(nn.Module):
    """Embedding-conditioned generator; ``label`` picks how ``y`` arrives."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label
        self.emb = nn.Embedding(K, 2) if label == "index" else nn.Linear(K, 2, bias=False)
        self.lin = nn.Linear(2, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, z, y):
        if self.label == "index":
            assert y.dtype == torch.long and y.dim() == 1
        else:
            assert y.dtype == torch.float32 and y.shape[1] == K
        return self.bn(self.lin(z) + self.emb(y))


class _Disc(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.emb = nn.Linear(2, 1), nn.Embedding(K, 2)

    def forward(self, x, y):  # a projection discriminator: psi(x) + <embed(y), x>
        return self.lin(x)[:, 0] + (self.emb(y) * x).sum(1)


@pytest.mark.parametrize("label", ["index", "onehot"])
def test_wrap_networks_with_either_label_convention(label):
    g = _Gen(label).eval()
    before = g.bn.running_mean.clone()
    t = refine.wrap(
        g,
        latent_shape=2,
        num_classes=K,
        label=label,
        discriminator=_Disc().eval() if label == "index" else None,
        output="logit" if label == "index" else None,
    )
    assert torch.equal(g.bn.running_mean, before)  # the probe left the buffers alone
    if label == "index":
        res = refine.sample(t, "drs", 12, rng=torch.Generator().manual_seed(0), classes="balanced")
        assert res.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
        # log r(x | y) of the conditional ratio agrees with the fixed-class ratio
        y = torch.tensor([0, 2])
        x = torch.randn(2, 2)
        both = t.ratio.log_ratio(x, y)
        assert torch.allclose(both, torch.stack([t.ratio.at(0).log_ratio(x[:1])[0], t.ratio.at(2).log_ratio(x[1:])[0]]))
    else:
        assert isinstance(t, ConditionalGenerator)
        res = refine.sample(t, "none", 6, rng=torch.Generator().manual_seed(0), classes=[1])
        assert res.y.tolist() == [1] * 6


def test_wrap_refuses_what_does_not_fit():
    with pytest.raises(ShapeError, match="num_classes"):
        refine.wrap(_Gen("index").eval(), latent_shape=2, num_classes=K + 2)  # the embedding knows K classes
    with pytest.raises(ShapeError):
        refine.wrap(_Gen("onehot").eval(), latent_shape=2, num_classes=K, label="index")
    with pytest.raises(ConfigError, match="label"):
        refine.wrap(g_net, latent_shape=2, num_classes=K, label="string")
    with pytest.raises(ConfigError, match="ConditionalRatio"):
        refine.wrap(g_net, latent_shape=2, num_classes=K, ratio=refine.FunctionRatio(lambda x: x[:, 0]))
    with pytest.raises(ConfigError, match="num_classes"):
        refine.wrap(g_net, latent_shape=2, num_classes=0)
    with pytest.raises(ConfigError, match="needs a density ratio"):
        refine.sample(refine.wrap(g_net, latent_shape=2, num_classes=K), "drs", 10)
    with pytest.raises(ConfigError, match="conditional"):
        refine.sample(
            refine.wrap(lambda z: z, latent_shape=2, ratio=refine.FunctionRatio(lambda x: x[:, 0])),
            "drs",
            10,
            classes=[0],
        )
    with pytest.raises(ConfigError):
        refine.sample(target(), "drs", 10, classes=[K])


def test_conditional_discriminator_ratio_reads_the_logit():
    d = _Disc().eval()
    r = ConditionalDiscriminatorRatio(
        lambda x, y: torch.sigmoid(d(x, y)), K, "prob", temperature=2.0
    )  # D(x, y) as a probability
    x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        assert torch.allclose(r.log_ratio(x, y), d(x, y) / 2.0, atol=1e-5)
        assert torch.allclose(r.at(1).log_ratio(x), d(x, torch.ones(5, dtype=torch.long)) / 2.0, atol=1e-5)


def test_real_samples_are_split_by_label():
    real = torch.cat([MU[c] + 0.1 * torch.randn(40, 2, generator=torch.Generator().manual_seed(c)) for c in range(K)])
    real_y = torch.arange(K).repeat_interleave(40)
    res = refine.sample(
        target(), "mh", 30, rng=torch.Generator().manual_seed(0), real=real, real_y=real_y, init="real", k=5
    )
    assert {c: int((res.y == c).sum()) for c in range(K)} == {0: 10, 1: 10, 2: 10}
    with pytest.raises(RefineError):
        refine.sample(target(), "mh", 30, real=real, init="real", k=5)
