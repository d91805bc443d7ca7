"""Balanced refinement of an unconditional generator: stratified acceptance by predicted class.

A 2-D toy: ``G(z) = z`` with ``z ~ N(0, I)`` and the ratio of ``N((0.7, 0.7), 0.9^2 I)`` to the
prior, which favours the first quadrant; the classifier's class is the quadrant of ``x``
(``(x0 > 0) + 2 (x1 > 0)``), so an unbalanced refined run over-samples class 3.
"""

from __future__ import annotations

import pytest
import torch

import refine
from refine.balanced import class_quotas, sample_balanced
from refine.conditional import ConditionalFunctionRatio
from refine.errors import BudgetExceededError, ConfigError
from refine.samplers import get_sampler
from refine.samplers.base import SampleInfo

S = 0.9
MU = torch.tensor([0.7, 0.7])


def log_r(x):
    return -((x - MU) ** 2).sum(1) / (2 * S**2) + (x**2).sum(1) / 2 - 2 * torch.log(torch.tensor(S))


def quadrant(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()


def classifier(x: torch.Tensor, k: int = 4) -> torch.Tensor:
    return torch.nn.functional.one_hot(quadrant(x), k).float() * 10


def target():
    return refine.wrap(lambda z: z, latent_shape=2, ratio=refine.FunctionRatio(log_r))


METHODS = {"none": {}, "rs": {"m_quantile": 0.99}, "sir": {"candidates": 8}}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("probs", [None, [0.1, 0.2, 0.3, 0.4]])
def test_exact_class_counts(method, probs):
    n = 203
    res = refine.sample(
        target(),
        method,
        n,
        rng=torch.Generator().manual_seed(0),
        balance=classifier,
        class_probs=probs,
        **METHODS[method],
    )
    quotas = class_quotas(n, probs or [0.25] * 4)
    assert res.x.shape == (n, 2)
    assert torch.bincount(quadrant(res.x), minlength=4).tolist() == quotas
    assert torch.equal(res.y, quadrant(res.x))
    assert torch.equal(res.y, torch.sort(res.y).values)  # class by class
    info = res.info
    assert isinstance(info, SampleInfo) and info["n"] == n
    bal = info.extras["balanced"]
    assert bal["quotas"] == quotas and bal["kept"] == quotas
    assert bal["drawn"] >= n and info.g_evals >= bal["drawn"]
    assert all(a is None or 0 < a <= 1 for a in bal["acceptance"])
    if res.z is not None:
        assert torch.allclose(res.z, res.x)


def test_unbalanced_run_favours_a_class():
    """The toy is a fair test: without balancing, rs over-samples the first quadrant."""
    res = refine.sample(target(), "rs", 400, rng=torch.Generator().manual_seed(0), m_quantile=0.99)
    counts = torch.bincount(quadrant(res.x), minlength=4)
    assert counts[3] > 2 * counts[0]


def test_deterministic_for_a_seed():
    def run(seed, batch=None):
        return sample_balanced(
            get_sampler("rs", m_quantile=0.99),
            target(),
            150,
            classifier=classifier,
            rng=torch.Generator().manual_seed(seed),
            batch=batch,
        )

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.info.extras["balanced"] == b.info.extras["balanced"]
    assert not torch.equal(a.x, c.x)
    fixed = run(1, batch=150)
    assert fixed.info.extras["balanced"]["round_sizes"] == [150] * fixed.info.extras["balanced"]["rounds"]
    assert a.info.extras["balanced"]["drawn"] <= fixed.info.extras["balanced"]["drawn"]  # adaptive rounds draw no more
    small = run(1, batch=40)
    assert small.info.extras["balanced"]["rounds"] > a.info.extras["balanced"]["rounds"]
    assert torch.bincount(small.y, minlength=4).tolist() == class_quotas(150, [0.25] * 4)


def test_starved_class_is_named():
    five = lambda x: classifier(x, k=5)  # noqa: E731 - class 4 is never predicted
    with pytest.raises(BudgetExceededError, match=r"classes short of their quota: 4 \(0 of 20, 0 predicted\)"):
        sample_balanced(
            get_sampler("none"), target(), 100, classifier=five, rng=torch.Generator().manual_seed(0), max_rounds=3
        )
    with pytest.raises(BudgetExceededError, match="3 rounds"):
        sample_balanced(
            get_sampler("none"), target(), 100, classifier=five, seed=0, batch=50, max_rounds=100, max_drawn=150
        )


@pytest.mark.parametrize(
    "n, probs",
    [
        (1, [0.25] * 4),
        (7, [1 / 3] * 3),
        (10, [0.05, 0.05, 0.9]),
        (1001, [0.0987, 0.1124, 0.0993, 0.1022, 0.0974, 0.0904, 0.0986, 0.1044, 0.0975, 0.0991]),
        (99, [3, 0, 1]),
        (13, [1e-9, 1 - 2e-9, 1e-9]),
    ],
)
def test_quotas_sum_to_n(n, probs):
    q = class_quotas(n, probs)
    p = torch.tensor(probs, dtype=torch.float64)
    p = p / p.sum()
    assert sum(q) == n and len(q) == len(probs)
    assert all(abs(qc - n * pc) < 1 for qc, pc in zip(q, p.tolist()))
    assert all(qc == 0 for qc, pc in zip(q, p.tolist()) if pc == 0)


def test_bad_requests():
    with pytest.raises(ConfigError, match="class_probs has 3 entries"):
        refine.sample(target(), "none", 10, balance=classifier, class_probs=[1, 1, 1])
    with pytest.raises(ConfigError, match="pass balance=classifier"):
        refine.sample(target(), "none", 10, class_probs=[1, 1, 1, 1])
    with pytest.raises(ConfigError, match="non-negative"):
        class_quotas(10, [1, -1])
    cond = refine.wrap(
        lambda z, y: z, latent_shape=2, num_classes=4, ratio=ConditionalFunctionRatio(lambda x, y: x[:, 0] * 0, 4)
    )
    with pytest.raises(ConfigError, match="conditional one takes classes="):
        refine.sample(cond, "rs", 10, balance=classifier)
    with pytest.raises(refine.errors.ShapeError, match="expected logits"):
        refine.sample(target(), "none", 10, balance=lambda x: x[:, 0])
