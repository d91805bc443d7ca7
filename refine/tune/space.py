"""What ``refine tune`` searches: the main knobs of every method, and what a setting costs.

A setting is one method with one value per knob. Its cost is counted in passes per
output sample through the generator G and through the ratio network D (forward
passes plus backward passes, a backward pass counting as two forwards, as
:meth:`refine.samplers.Sampler.planned_evals` counts them); the larger of the two is
the figure the budget bounds.

Costs are stated at the final number of samples ``n`` a tune scores with: work that
does not grow with the number of samples (a rejection sampler's burn-in, DOT's
``K_eff`` pairs: :meth:`MethodSpace.overhead`) is spread over that ``n`` even when a
trial of a lower rung draws fewer samples, so a setting costs the same on every rung.
:meth:`MethodSpace.max_cost` is the most a setting can spend, known before it runs,
so a setting over the budget is never drawn; the rejection methods, whose cost
depends on their acceptance rate, run with their own ``budget`` option set to what
is left (:meth:`MethodSpace.run_options`), so they stop, and the trial is recorded as
over budget, rather than exceed it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError

__all__ = [
    "Knob",
    "MethodSpace",
    "default_spaces",
    "passes",
    "sampler_options",
    "TEMPERATURE",
    "PROPOSAL_METHODS",
    "GRADIENT_METHODS",
]

#: The knob that scales a critic: ``log r = critic / T`` (searched only for critic ratios).
TEMPERATURE = "ratio_temperature"
#: Methods that propose from the prior and read ``log r(G(z))`` only: their proposals can be shared.
PROPOSAL_METHODS = ("rs", "drs", "sir", "mh")
GRADIENT_METHODS = ("ddls", "dgflow", "dcd", "dot")

#: Rejection methods: proposals evaluated per round and before sampling (fixed, so a setting's cost is comparable across rungs).
REJECTION_BATCH = 500
REJECTION_BURN_IN = 1000


@dataclass(frozen=True)
class Knob:
    """One searched option: a log-uniform or uniform range, an integer range, or a choice."""

    name: str
    kind: str  # "log", "uniform", "int", "choice", "tail" (1 - a log-uniform value: quantiles near 1)
    low: float = 0.0
    high: float = 1.0
    choices: tuple = ()

    def draw(self, rng: torch.Generator, high: float | None = None) -> Any:
        u = float(torch.rand((), generator=rng, dtype=torch.float64))
        if self.kind == "choice":
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        hi = self.high if high is None else min(self.high, high)
        if self.kind == "uniform":
            return round(self.low + u * (hi - self.low), 4)
        if self.kind == "tail":
            return round(1.0 - math.exp(math.log(self.low) + u * (math.log(hi) - math.log(self.low))), 5)
        if self.kind == "log":
            return float(f"{math.exp(math.log(self.low) + u * (math.log(hi) - math.log(self.low))):.3g}")
        if self.kind == "int":  # log-uniform over the integers low..hi
            return int(min(hi, math.floor(math.exp(math.log(self.low) + u * (math.log(hi + 1) - math.log(self.low))))))
        raise ConfigError(f"unknown knob kind {self.kind!r}")


def passes(info: dict) -> dict[str, float]:
    """Passes per output sample from a sampler's ``info``: ``{"g", "d", "cost"}`` (backward = 2 forwards)."""
    g = float(info.get("g_evals_per_sample", 0.0)) + 2.0 * float(info.get("g_backward_per_sample", 0.0))
    d = float(info.get("d_evals_per_sample", 0.0)) + 2.0 * float(info.get("d_backward_per_sample", 0.0))
    return {"g": g, "d": d, "cost": max(g, d)}


@dataclass(frozen=True)
class MethodSpace:
    """A method's knobs, its fixed options, and the most a setting can cost (passes per sample at ``n`` samples)."""

    method: str
    knobs: tuple[Knob, ...] = ()
    fixed: dict = field(default_factory=dict)
    #: ``max_cost(options, n)``; None: the sampler's own ``budget`` option caps it (rejection methods)
    max_cost: Callable[[dict, int], float] | None = None
    #: the knob that sets the cost (drawn last, within what the budget leaves)
    cost_knob: str | None = None
    #: passes (G and D alike) a run spends once, whatever its number of samples
    overhead: Callable[[dict], float] = lambda o: 0.0

    def draw(self, rng: torch.Generator, budget: float, n: int) -> dict | None:
        """One setting within ``budget`` at ``n`` samples, or None when no value of the cost knob fits."""
        opts: dict = {}
        for k in self.knobs:
            if k.name != self.cost_knob:
                opts[k.name] = k.draw(rng)
        if self.cost_knob is not None:
            knob = next(k for k in self.knobs if k.name == self.cost_knob)
            hi = knob.high
            while hi >= knob.low and self.max_cost({**self.fixed, **opts, knob.name: int(hi)}, n) > budget:
                hi -= 1 if hi < 64 else max(1, int(hi) // 16)
            if hi < knob.low:
                return None
            opts[knob.name] = knob.draw(rng, high=hi)
        return {**self.fixed, **opts}

    def run_options(self, setting: dict, budget: float, n: int, n_final: int) -> dict:
        """The sampler options of a trial of ``n`` samples: the setting (less the ratio temperature), plus the budget guard.

        A rejection sampler evaluates at most ``burn_in + budget_option * n + batch_size``
        proposals (it checks its budget before each round of ``batch_size``), so the guard is
        what the budget leaves after the burn-in (spread over ``n_final``) and one round.
        """
        opts = sampler_options(setting)
        if self.max_cost is None:
            left = budget - REJECTION_BURN_IN / n_final - REJECTION_BATCH / n
            opts["budget"] = max(left, 1e-9)
        return opts

    def cost(self, setting: dict, info: dict, n: int, n_final: int) -> dict[str, float]:
        """Passes per sample at ``n_final`` samples from a trial of ``n`` samples: ``{"g", "d", "cost"}``."""
        p = passes(info)
        shift = float(self.overhead(setting)) * (1.0 / n - 1.0 / n_final)
        g, d = max(p["g"] - shift, 0.0), max(p["d"] - shift, 0.0)
        return {"g": g, "d": d, "cost": max(g, d)}


def sampler_options(setting: dict) -> dict:
    """The options a sampler takes from a setting (the critic temperature belongs to the ratio)."""
    return {k: v for k, v in setting.items() if k != TEMPERATURE}


def _gradient_cost(opts: dict, n: int) -> float:
    """Passes per sample of a gradient method: the start and each step one forward and one backward (two forwards) pass."""
    extra = (
        2.0 * int(opts["pairs"]) / n if "pairs" in opts else 0.0
    )  # DOT's K_eff estimate: forward passes on 2 x pairs samples
    return 3.0 * (int(opts["steps"]) + 1) + extra


def default_spaces(
    *, methods: Sequence[str] | None = None, critic: bool = False, max_steps: int = 1000
) -> dict[str, MethodSpace]:
    """The searched knobs of every method; ``critic=True`` adds the critic's temperature to each ratio method.

    The ranges span the settings in the literature and in refine's own tables by an order
    of magnitude on either side (step sizes 1e-5..1e-1, DRS gamma 50..99.9, quantiles
    of M 0.5..1); what the budget allows is decided per setting.
    """
    steps = Knob("steps", "int", 1, max_steps)
    spaces = {
        "none": MethodSpace("none", max_cost=lambda o, n: 1.0),
        "rs": MethodSpace(
            "rs",
            (Knob("m_quantile", "tail", 1e-4, 0.5),),
            fixed={"batch_size": REJECTION_BATCH, "burn_in": REJECTION_BURN_IN},
            overhead=lambda o: float(o["burn_in"]),
        ),
        "drs": MethodSpace(
            "drs",
            (Knob("gamma", "uniform", 50.0, 99.9),),
            fixed={"batch_size": REJECTION_BATCH, "burn_in": REJECTION_BURN_IN},
            overhead=lambda o: float(o["burn_in"]),
        ),
        "sir": MethodSpace(
            "sir",
            (Knob("candidates", "int", 2, 100_000),),
            max_cost=lambda o, n: float(o["candidates"]),
            cost_knob="candidates",
        ),
        "mh": MethodSpace(
            "mh", (Knob("k", "int", 1, 100_000),), max_cost=lambda o, n: float(o["k"]) + 1.0, cost_knob="k"
        ),
        "ddls": MethodSpace(
            "ddls",
            (Knob("step_size", "log", 1e-5, 1e-1), Knob("mala", "choice", choices=(False, True)), steps),
            max_cost=_gradient_cost,
            cost_knob="steps",
        ),
        "dgflow": MethodSpace(
            "dgflow",
            (Knob("step_size", "log", 1e-5, 1e-1), Knob("divergence", "choice", choices=("KL", "logD", "JS")), steps),
            max_cost=_gradient_cost,
            cost_knob="steps",
        ),
        "dcd": MethodSpace(
            "dcd",
            (Knob("step_size", "log", 1e-5, 1e-1), Knob("space", "choice", choices=("data", "latent")), steps),
            max_cost=_gradient_cost,
            cost_knob="steps",
        ),
        "dot": MethodSpace(
            "dot",
            # Adam's learning rate (DOT's default optimizer); the overhead is what DOT declares:
            # the K_eff pairs of every repeat and, at most, its spectral-norm thermalisation
            (Knob("lr", "log", 1e-3, 1e-1), Knob("space", "choice", choices=("data", "latent")), steps),
            fixed={"pairs": 100, "k_eff_repeats": 10, "thermalize": 100},
            max_cost=_gradient_cost,
            cost_knob="steps",
            overhead=lambda o: 2.0 * int(o["pairs"]) * int(o["k_eff_repeats"]) + 10.0 * int(o["thermalize"]),
        ),
    }
    if critic:  # DOT is left alone: its K_eff is estimated from the same scores, so the temperature cancels
        t = Knob(TEMPERATURE, "log", 1e-3, 1.0)
        spaces = {
            m: s
            if m in ("none", "dot")
            else MethodSpace(s.method, (t, *s.knobs), s.fixed, s.max_cost, s.cost_knob, s.overhead)
            for m, s in spaces.items()
        }
    if methods is None:
        return spaces
    unknown = [m for m in methods if m not in spaces]
    if unknown:
        raise ConfigError(f"--methods: unknown method(s) {', '.join(unknown)}; tunable methods: {', '.join(spaces)}")
    return {m: spaces[m] for m in methods}
