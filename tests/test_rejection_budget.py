"""Rejection samplers: early refusal when the budget cannot be met, and the small-n burn-in."""

from __future__ import annotations

import pytest
import torch

import refine
from refine.errors import BudgetExceededError
from refine.generator import LatentGenerator, NormalPrior
from refine.ratio import FunctionRatio
from refine.samplers.rejection import acceptance_rate, burn_in_size, rate_upper_bound
from refine.target import LatentTarget


def _target(fn):
    return LatentTarget(LatentGenerator(lambda z: z, NormalPrior((1,))), FunctionRatio(fn))


def test_hopeless_run_is_refused_long_before_its_budget():
    # r = exp(8 x): the burn-in max keeps rising, acceptance collapses; budget 1000 x 2000 proposals.
    target = _target(lambda x: 8.0 * x[:, 0])
    with pytest.raises(
        BudgetExceededError, match=r"rs: \d+ of 2000 samples after (\d+) proposals.*raise -o budget"
    ) as e:
        refine.sample(target, "rs", 2000, rng=torch.Generator().manual_seed(0), m_quantile=1.0)
    proposals = int(e.value.args[0].split(" proposals")[0].split()[-1])
    assert proposals < 2000 * 1000 / 10  # refused within a tenth of the budget


def test_feasible_run_is_not_refused():
    # r = 2 on half the line, 1 elsewhere: acceptance 3/4 against M = 2; a tight budget of 2 per sample still suffices.
    target = _target(lambda x: torch.where(x[:, 0] > 0, 0.6931, 0.0))
    res = refine.sample(target, "rs", 3000, rng=torch.Generator().manual_seed(0), budget=2.0)
    assert res.info["accepted"] == 3000


def test_small_n_burn_in_is_scaled_and_reused():
    target = _target(lambda x: torch.where(x[:, 0] > 0, 0.6931, 0.0))
    res = refine.sample(target, "rs", 20, rng=torch.Generator().manual_seed(0))
    assert res.info["burn_in"] == 256 and res.info["burn_in_reused"]
    assert res.info["g_evals_per_sample"] <= 256 / 20  # all 20 come from the reused burn-in
    assert burn_in_size(None, 10_000) == 10_000 and burn_in_size(None, 100) == 400 and burn_in_size(64, 5) == 64


def test_explicit_burn_in_keeps_old_behaviour():
    target = _target(lambda x: torch.where(x[:, 0] > 0, 0.6931, 0.0))
    res = refine.sample(target, "rs", 20, rng=torch.Generator().manual_seed(0), burn_in=512)
    assert res.info["burn_in"] == 512 and not res.info["burn_in_reused"]


def test_rate_upper_bound_covers_the_rate():
    assert rate_upper_bound(0, 100) > 0 and rate_upper_bound(50, 100) > 0.5 and rate_upper_bound(100, 100) == 1.0


def test_acceptance_rate_exact_and_capped():
    """Log ratios log 1, log 2, log 4: exact rs takes M = 4 and accepts 1/4, 1/2 and 1 of them; with M at a
    quantile, ratios above it are capped (accepted with probability 1)."""
    lw = torch.tensor([1.0, 2.0, 4.0]).log()
    assert acceptance_rate(lw) == pytest.approx(7 / 12)
    assert acceptance_rate(lw, 0.5) == pytest.approx((1 / 2 + 1 + 1) / 3)  # M at the median, 2: 4 is capped


def test_fit_ratio_reports_what_rs_would_cost():
    """fit-ratio's line on rs: the cost per sample from generated samples, split in any batches alike,
    and the advice when it is over rs's default budget."""
    from refine.cli.fit_ratio import _rs_advice, exact_rs_cost

    x = torch.linspace(-3, 3, 1001)[:, None]
    ratio = FunctionRatio(lambda x: 2.0 * x[:, 0])
    whole, split = exact_rs_cost(ratio, [x]), exact_rs_cost(ratio, x.split(7))
    assert whole == split and whole["samples"] == 1001
    lw = 2.0 * x[:, 0]
    assert whole["proposals_per_sample"] == pytest.approx(1 / acceptance_rate(lw))
    assert whole["proposals_per_sample_m_quantile_0.99"] == pytest.approx(1 / acceptance_rate(lw, 0.99))
    budget = refine.samplers.rejection.RejectionSampler().budget
    over = dict(whole, proposals_per_sample=2 * budget)
    assert "above its default budget" in _rs_advice(over) and "m_quantile=1 would be refused" in _rs_advice(over)
    assert "above" not in _rs_advice(dict(whole, proposals_per_sample=budget / 2))
