"""Rejection samplers: early refusal when the budget cannot be met, and the small-n burn-in."""

from __future__ import annotations

import pytest
import torch

import refine
from refine.errors import BudgetExceededError
from refine.generator import LatentGenerator, NormalPrior
from refine.ratio import FunctionRatio
from refine.samplers.rejection import burn_in_size, rate_upper_bound
from refine.target import LatentTarget


def _target(fn):
    return LatentTarget(LatentGenerator(lambda z: z, NormalPrior((1,))), FunctionRatio(fn))


def test_hopeless_run_is_refused_long_before_its_budget():
    # r = exp(8 x): the burn-in max keeps rising, acceptance collapses; budget 1000 x 2000 proposals.
    target = _target(lambda x: 8.0 * x[:, 0])
    with pytest.raises(
        BudgetExceededError, match=r"rs: \d+ of 2000 samples after (\d+) proposals.*raise -o budget"
    ) as e:
        refine.sample(target, "rs", 2000, rng=torch.Generator().manual_seed(0))
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
