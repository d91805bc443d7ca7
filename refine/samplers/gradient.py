"""What the gradient methods share around the engine: potentials, starts, bounds and their base class.

The engine (:mod:`refine.samplers.langevin`) runs chains on any potential
``position -> (U, grad U, aux)``. This module builds those potentials from a latent
target and holds the plumbing every gradient method uses:

- :func:`ratio_only`: the target's generator and ratio without the prior term (its
  ``value_and_grad`` gives ``log r(G(z))``, its ``log_ratio`` reads a bare ratio);
- :func:`latent_potential` (``U(z) = scale * F(log r(G(z))) [+ log p0(z)]``) and
  :func:`data_potential` (``U(x) = scale * log r(x)``). Gradients come from
  ``torch.autograd.grad`` with respect to the position only: no parameter of the user's
  modules receives a ``.grad`` and no ``requires_grad`` flag is changed;
- starting points (:func:`prior_start`, :func:`generated_start`) and boxes
  (:func:`prior_bounds`, :func:`output_bounds`);
- :class:`GradientSampler`, the base of the registered gradient samplers: the engine's
  switches as options, the chunked run and the pass counts. A method implements
  :meth:`GradientSampler._plan` returning a :class:`Plan` (its potential, its starts, where
  it moves) in its own file.
"""

from __future__ import annotations

import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import torch

from ..generator import RANGE_BOUNDS
from ..target import LatentTarget
from ._ops import positive
from .base import SampleInfo, Sampler, SampleResult, option
from .langevin import LangevinConfig, LangevinState, Potential, run_chunked, validate_common

__all__ = [
    "ratio_only",
    "latent_potential",
    "data_potential",
    "ratio_value_and_grad",
    "Transform",
    "Plan",
    "prior_start",
    "generated_start",
    "prior_bounds",
    "output_bounds",
    "GradientSampler",
]

#: A transform ``F`` of the log ratio and its derivative ``F'`` (e.g. DGflow's divergences).
Transform = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


# --------------------------------------------------------------------------- potentials
def ratio_only(target) -> LatentTarget:
    """The same generator and ratio without the prior term.

    Its ``value_and_grad(z)`` returns ``log r(G(z))`` and its gradient, ``log_ratio(x)`` the
    ratio's checked scores: what a method needs that reads the ratio apart from the prior
    (DGflow, DOT, a data-space chain on a ratio being fine-tuned). ``target`` is a latent
    target, or ``(generator, ratio)``.
    """
    if isinstance(target, tuple):
        generator, ratio = target
        return LatentTarget(generator, ratio, prior_term=False)
    if not target.prior_term:
        return target
    return type(target)(target.generator, target.ratio, prior_term=False)


def latent_potential(
    target, *, prior: bool = True, transform: Transform | None = None, scale: float = 1.0
) -> Potential:
    """``U(z) = scale * F(log r(G(z))) [+ log p0(z)]`` with ``aux = (G(z), log r(G(z)))``.

    Gradients come from ``target.value_and_grad`` (they reach ``z`` only); ``transform`` is
    ``(F, F')`` (``None``: the identity) and the prior term is added analytically.
    """
    view = ratio_only(target)
    p0 = target.prior
    f, fprime = transform if transform is not None else (None, None)

    def potential(z: torch.Tensor):
        d, gd, x = view.value_and_grad(z)
        if f is not None:
            value, grad = f(d), fprime(d).view(-1, *([1] * (gd.dim() - 1))) * gd
        else:
            value, grad = d, gd
        if scale != 1.0:
            value, grad = scale * value, scale * grad
        if prior:
            value = value + p0.log_prob(z)
            grad = grad + p0.grad_log_prob(z)
        return value.detach(), grad.detach(), (x, d.detach())

    return potential


def ratio_value_and_grad(target, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log r(x), grad_x log r(x))`` with gradients to ``x`` only."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        d = target.log_ratio(x)
        (g,) = torch.autograd.grad(d.sum(), x)
    return d.detach(), g


def data_potential(target, *, scale: float = 1.0) -> Potential:
    """``U(x) = scale * log r(x)`` in data space, ``aux = (x, log r(x))``."""

    def potential(x: torch.Tensor):
        d, g = ratio_value_and_grad(target, x)
        return scale * d, scale * g, (x.detach(), d)

    return potential


# --------------------------------------------------------------------------- starts and bounds
class Plan(NamedTuple):
    """What a gradient sampler runs: potentials, starting positions and bookkeeping."""

    potential_for: Callable[[torch.Tensor], Potential]
    start: Callable[[int], torch.Tensor]
    space: str  # "latent" or "data"
    bounds: Optional[tuple[float, float]] = None
    extra_g_total: int = 0  # passes outside the chains (e.g. DOT's K_eff estimate, critic fine-tuning)
    extra_d_total: int = 0
    extra_g_backward_total: int = 0
    extra_d_backward_total: int = 0
    info: Optional[dict] = None


def prior_start(target, rng) -> Callable[[int], torch.Tensor]:
    """Starting latents drawn from the prior."""
    return lambda c: target.prior.sample(c, rng=rng, device=target.device)


def generated_start(target, n: int, rng) -> tuple[Callable[[int], torch.Tensor], torch.Tensor]:
    """Starting points ``G(z)``, ``z ~ p0``, generated chunk by chunk; returns ``(start, z)``."""
    z_all = target.prior.sample(n, rng=rng, device=target.device)
    offset = [0]

    def start(c: int) -> torch.Tensor:
        z = z_all[offset[0] : offset[0] + c]
        offset[0] += c
        with torch.no_grad():
            return target.generator(z).detach()

    return start, z_all


def prior_bounds(target) -> Optional[tuple[float, float]]:
    """The box of a uniform prior, else None."""
    lo, hi = getattr(target.prior, "low", None), getattr(target.prior, "high", None)
    return (float(lo), float(hi)) if lo is not None and hi is not None else None


def output_bounds(generator) -> Optional[tuple[float, float]]:
    """The declared value range of a generator's outputs (``[-1,1]``, ``[0,1]``), else None."""
    return RANGE_BOUNDS.get(getattr(generator, "output_range", "none"))


# --------------------------------------------------------------------------- sampler base
@dataclass(frozen=True)
class GradientSampler(Sampler):
    """Base of the gradient samplers: the engine's switches as options, chunked runs, pass counts.

    Subclasses redeclare defaults and implement :meth:`_plan` returning a :class:`Plan`.
    ``info`` counts forward (``g_evals``, ``d_evals``) and backward (``g_backward``,
    ``d_backward``) passes through the generator and the ratio network; with ``mala`` the
    moves proposed and accepted.

    ``potential_temperature`` tempers the whole potential the chains follow. It is not the
    ratio's temperature (``DiscriminatorRatio(temperature=)``, ``--disc-temperature``), which
    scales the scores ``log r = score / T`` before any method reads them; the old option name
    ``temperature`` is still accepted, with a DeprecationWarning.
    """

    needs_gradients: typing.ClassVar[bool] = True
    renamed_options: typing.ClassVar[dict[str, str]] = {"temperature": "potential_temperature"}

    step_size: float = option(0.01, "step size eps: drift (eps/2) * grad log pi")
    steps: int = option(100, "updates per chain")
    noise_scale: float = option(1.0, "noise sigma = noise_scale * sqrt(eps) (1: Langevin, 0: gradient ascent)")
    noise: Optional[float] = option(None, "fixed noise sigma, overrides noise_scale")
    decay: float = option(1.0, "step-size decay per step: eps_t = eps * decay^t, in (0, 1]")
    clip: Optional[float] = option(None, "clip each element of the drift gradient to [-clip, clip]")
    potential_temperature: float = option(
        1.0,
        "sample exp(U / T): tempers the whole potential the chains follow (the ratio's own "
        "temperature, --disc-temperature, scales log r before it; formerly -o temperature)",
    )
    mala: bool = option(False, "Metropolis-adjusted (MALA): exact for the target at any step size")
    batch_size: int = option(4096, "chains run together (memory bound)")

    def __post_init__(self) -> None:
        validate_common(
            self.step_size,
            self.steps,
            self.noise_scale,
            self.noise,
            self.decay,
            self.clip,
            self.potential_temperature,
            temperature_name="potential_temperature",
        )
        positive("batch_size", self.batch_size)
        self._config(None)  # validates the combination (e.g. mala without noise)

    @property
    def temperature(self) -> float:
        """Deprecated name of :attr:`potential_temperature`."""
        warnings.warn(
            "the sampler option 'temperature' is now 'potential_temperature' (it is not the ratio's temperature)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.potential_temperature

    def _config(self, bounds) -> LangevinConfig:
        return LangevinConfig(
            step_size=float(self.step_size),
            steps=int(self.steps),
            noise_scale=float(self.noise_scale),
            noise=None if self.noise is None else float(self.noise),
            decay=float(self.decay),
            clip=None if self.clip is None else float(self.clip),
            temperature=float(self.potential_temperature),
            mala=bool(self.mala),
            bounds=bounds,
        )

    def planned_evals(self, n: int) -> float:
        return float(n) * (3 * self.steps + 1)  # each step: one forward and one backward (twice a forward) pass

    def _plan(self, target, n: int, rng, real) -> Plan:
        raise NotImplementedError

    def _run(self, plan: Plan, n: int, *, rng, progress: bool) -> tuple[LangevinState, dict]:
        """Run the chains of ``plan`` (a hook: the engine in chunks; DOT's Adam replaces it).

        Returns the final state and the engine's counters (``evaluations_per_chain``,
        ``accepted``, ``start_value``).
        """
        return run_chunked(
            plan.potential_for,
            plan.start,
            n,
            int(self.batch_size),
            self._config(plan.bounds),
            rng=rng,
            progress=progress,
            desc=self.name,
        )

    def _extras(self, extras: dict[str, Any]) -> dict[str, Any]:
        """The method's own entries of ``info`` from the shared ones (a hook; DOT reports its objective)."""
        return extras

    def _check_gradients(self, target) -> None:
        """Latent-space methods need ``d log r(G(z)) / dz``; data-space ones only ``d log r(x) / dx``."""
        target.check_differentiable(method=self.name, through_generator=not self.moves_in_data_space)

    def sample(self, target, n, *, rng=None, progress=False, real=None) -> SampleResult:
        n = self._check_n(n)
        t0 = time.perf_counter()
        self._check_gradients(target)  # a clear error up front, whatever the entry point
        plan = self._plan(target, n, rng, real)
        state, stats = self._run(plan, n, rng=rng, progress=progress)
        x, log_r = state.aux
        evals = stats["evaluations_per_chain"]
        latent = plan.space == "latent"
        extras = {
            "space": plan.space,
            "steps": int(self.steps),
            "potential_start_mean": float(stats["start_value"].double().mean()),
            "potential_end_mean": float(state.value.double().mean()),
            "log_ratio_end_mean": float(log_r.double().mean()),
            **(plan.info or {}),
        }
        mala = bool(self.mala)
        info = SampleInfo(
            method=self.name,
            n=n,
            g_evals=(evals if latent else 1) * n + plan.extra_g_total,
            d_evals=evals * n + plan.extra_d_total,
            g_backward=(evals if latent else 0) * n + plan.extra_g_backward_total,
            d_backward=evals * n + plan.extra_d_backward_total,
            proposals=n * int(self.steps) if mala else None,
            accepted=int(round(stats["accepted"])) if mala else None,
            wall_time_s=time.perf_counter() - t0,
            extras=self._extras(extras),
        )
        # data-space chains move x away from G(z): there is no latent for the output, so z is None
        z = state.position.detach() if latent else None
        return SampleResult(x.detach(), z, info)
