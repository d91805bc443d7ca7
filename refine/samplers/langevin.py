"""One engine for every gradient-based refiner: Langevin / MALA / gradient-ascent updates.

Every gradient method in refine (DDLS, DCD, DGflow, DOT) is this engine run on a
different *potential* ``U`` (a log density up to a constant, to be increased):

    v  <-  v + (eps_t / 2) * clip(grad U(v) / T) + sigma_t * xi,     xi ~ N(0, I)

with switches rather than copies:

- ``step_size`` ``eps`` and ``decay``: ``eps_t = eps * decay**t``;
- ``noise_scale`` ``s``: ``sigma_t = s * sqrt(eps_t)`` (``s = 1`` is Langevin; ``s = 0``
  is plain gradient ascent), or ``noise``: a fixed ``sigma`` whatever the step size;
- ``clip``: per-element clipping of the drift gradient (DCD);
- ``temperature`` ``T``: the chain targets ``exp(U / T)``;
- ``mala``: a Metropolis-Hastings correction with the Gaussian proposal above, which
  makes the chain exact for ``exp(U / T)`` for any step size, clipping or noise level
  (the proposal density uses the same clipped drift and ``sigma``);
- ``bounds``: keep positions in a box (reflection for Langevin, clamping for gradient
  ascent), e.g. a uniform prior's support or an image's value range.

BlackJAX style: :func:`init` evaluates a starting batch into a :class:`LangevinState`
(a NamedTuple); :func:`step` is a pure function ``(state, t) -> (state, info)``; the
loop :func:`run` and the chunking over large ``n`` (:func:`run_chunked`) are shared.
The state always holds the potential, its gradient and the auxiliary output (e.g.
``G(z)``) *at* its position, so a chain of ``K`` steps costs ``K + 1`` evaluations.

Potentials (:func:`latent_potential`, :func:`data_potential`) take gradients with
``torch.autograd.grad`` with respect to the position only: no parameter of the
user's modules receives a ``.grad`` and no ``requires_grad`` flag is changed.

:class:`GradientSampler` is the base of the registered samplers; it holds only
hyperparameters (a frozen dataclass) and builds a potential per call.
"""

from __future__ import annotations

import math
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, NonFiniteError, NotDifferentiableError
from ._ops import accept_log, positive
from .base import Sampler, SampleResult, option

__all__ = [
    "LangevinConfig",
    "LangevinState",
    "LangevinInfo",
    "Potential",
    "init",
    "step",
    "run",
    "run_chunked",
    "latent_potential",
    "data_potential",
    "ratio_value_and_grad",
    "normal_noise",
    "GradientSampler",
    "Plan",
    "prior_start",
    "generated_start",
    "prior_bounds",
    "output_bounds",
    "DIVERGENCES",
]

#: A potential maps a batch of positions to ``(U (B,), grad U (B, ...), aux)``.
Potential = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor, Any]"]


class LangevinState(NamedTuple):
    """A batch of chains: positions and the potential evaluated there."""

    position: torch.Tensor
    value: torch.Tensor  # U(position), (B,)
    grad: torch.Tensor  # grad U(position), like position
    aux: Any  # what the potential returned besides (e.g. (G(z), log r)); tensors or tuples of tensors with batch first


class LangevinInfo(NamedTuple):
    accepted: torch.Tensor  # (B,) bool; all True without MALA
    log_accept: torch.Tensor  # (B,) log acceptance probability (0 without MALA)
    step_size: float
    sigma: float


@dataclass(frozen=True)
class LangevinConfig:
    """Hyperparameters of the update (see the module docs). Validated on construction."""

    step_size: float
    steps: int
    noise_scale: float = 1.0
    noise: Optional[float] = None
    decay: float = 1.0
    clip: Optional[float] = None
    temperature: float = 1.0
    mala: bool = False
    bounds: Optional[tuple[float, float]] = None

    def __post_init__(self) -> None:
        validate_common(
            self.step_size, self.steps, self.noise_scale, self.noise, self.decay, self.clip, self.temperature
        )
        if self.mala and self.noise_scale == 0 and self.noise in (None, 0.0):
            raise ConfigError(
                "mala needs noise: set noise_scale > 0 (or noise > 0); without noise the chain is gradient ascent"
            )
        if self.mala and self.noise == 0.0:
            raise ConfigError("mala needs noise > 0")
        if self.bounds is not None:
            lo, hi = self.bounds
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise ConfigError(f"bounds must be finite with high > low, got {self.bounds}")

    def step_size_at(self, t: int) -> float:
        return float(self.step_size) * float(self.decay) ** t

    def sigma_at(self, t: int) -> float:
        if self.noise is not None:
            return float(self.noise)
        return float(self.noise_scale) * math.sqrt(self.step_size_at(t))


def validate_common(step_size, steps, noise_scale, noise, decay, clip, temperature) -> None:
    """Check the shared switches; each message names the option."""
    positive("step_size", step_size)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    positive("noise_scale", noise_scale, allow_zero=True)
    positive("noise", noise, allow_zero=True)
    if not (0.0 < float(decay) <= 1.0):
        raise ConfigError(f"decay (per-step step-size factor) must lie in (0, 1], got {decay}")
    positive("clip", clip)
    positive("temperature", temperature)


# --------------------------------------------------------------------------- helpers
def normal_noise(like: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
    """N(0, I) shaped like ``like``, drawn on ``rng``'s device (CPU by default) and moved."""
    dev = rng.device if rng is not None else "cpu"
    return torch.randn(like.shape, generator=rng, device=dev).to(device=like.device, dtype=like.dtype)


def _rows(mask: torch.Tensor, a, b):
    """Row-wise select over tensors or tuples of tensors: ``a[i]`` where ``mask[i]`` else ``b[i]``."""
    if isinstance(a, torch.Tensor):
        return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)
    if isinstance(a, (tuple, list)):
        return type(a)(_rows(mask, u, v) for u, v in zip(a, b))
    if a is None:
        return None
    raise TypeError(f"cannot select rows of {type(a).__name__}")


def _cat(parts: list):
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, (tuple, list)):
        return type(first)(_cat([p[i] for p in parts]) for i in range(len(first)))
    return None


def _sq_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).double().pow(2).sum(1)


def _check_eval(value: torch.Tensor, grad: torch.Tensor, t: int, *, allow_neg_inf: bool) -> torch.Tensor:
    """Raise on NaN/+inf values (and -inf unless allowed) or non-finite gradients; return the finite rows."""
    bad = torch.isnan(value) | (value == math.inf)
    what = "NaN or +inf"
    if not allow_neg_inf and bool((value == -math.inf).any()):
        bad |= value == -math.inf
        what = "-inf (a position left the prior's support)"
    if bool(bad.any()):
        raise NonFiniteError(
            f"the potential is {what} for {int(bad.sum())} of {len(value)} chains at step {t}; "
            "check the ratio's scores, lower -o step_size, or set -o clip"
        )
    finite = torch.isfinite(value)
    gbad = ~torch.isfinite(grad.flatten(1)).all(1) & finite
    if bool(gbad.any()):
        raise NonFiniteError(
            f"the gradient of the potential is NaN or inf for {int(gbad.sum())} of {len(value)} chains at step {t}; "
            "lower -o step_size or set -o clip"
        )
    return finite


# --------------------------------------------------------------------------- the engine
def init(position: torch.Tensor, potential: Potential) -> LangevinState:
    """Evaluate ``potential`` at a batch of starting positions."""
    value, grad, aux = potential(position)
    _check_eval(value, grad, 0, allow_neg_inf=False)
    return LangevinState(position.detach(), value.detach(), grad.detach(), aux)


def _drift(grad: torch.Tensor, cfg: LangevinConfig) -> torch.Tensor:
    g = grad / cfg.temperature if cfg.temperature != 1.0 else grad
    if cfg.clip is not None:
        g = g.clamp(-cfg.clip, cfg.clip)
    return g


def _bound(v: torch.Tensor, cfg: LangevinConfig, *, reflect: bool) -> torch.Tensor:
    if cfg.bounds is None:
        return v
    lo, hi = cfg.bounds
    if not reflect:
        return v.clamp(lo, hi)
    width = hi - lo
    u = torch.remainder(v - lo, 2 * width)  # fold onto [0, 2w), then mirror the upper half
    return lo + torch.where(u > width, 2 * width - u, u)


def step(
    state: LangevinState, potential: Potential, cfg: LangevinConfig, t: int, *, rng: torch.Generator | None
) -> tuple[LangevinState, LangevinInfo]:
    """One update of every chain in ``state`` (pure: the input state is not modified)."""
    eps = cfg.step_size_at(t)
    sigma = cfg.sigma_at(t)
    mean = state.position + 0.5 * eps * _drift(state.grad, cfg)
    prop = mean + sigma * normal_noise(state.position, rng) if sigma > 0 else mean
    if not cfg.mala:
        prop = _bound(prop, cfg, reflect=sigma > 0)
    value, grad, aux = potential(prop)
    finite = _check_eval(value, grad, t + 1, allow_neg_inf=cfg.mala)
    value, grad = value.detach(), grad.detach()
    if cfg.mala and cfg.bounds is not None:  # MALA on the box: proposals outside it are rejected
        lo, hi = cfg.bounds
        flat = prop.flatten(1)
        finite = finite & ((flat >= lo) & (flat <= hi)).all(1)
    if not cfg.mala:
        ones = torch.ones(len(value), dtype=torch.bool, device=value.device)
        return LangevinState(prop.detach(), value, grad, aux), LangevinInfo(ones, torch.zeros_like(value), eps, sigma)
    # MALA: q(b | a) = N(b; a + eps/2 * drift(a), sigma^2 I); reverse move uses the proposal's drift.
    grad_safe = torch.where(finite.view(-1, *([1] * (grad.dim() - 1))), grad, torch.zeros_like(grad))
    back_mean = prop + 0.5 * eps * _drift(grad_safe, cfg)
    log_q_fwd = -_sq_norm(prop - mean) / (2 * sigma**2)
    log_q_bwd = -_sq_norm(state.position - back_mean) / (2 * sigma**2)
    log_alpha = (value.double() - state.value.double()) / cfg.temperature + log_q_bwd - log_q_fwd
    log_alpha = torch.where(finite, log_alpha, torch.full_like(log_alpha, -math.inf)).clamp_max(0.0)
    acc = accept_log(log_alpha, rng, value.device)
    new = LangevinState(
        _rows(acc, prop.detach(), state.position),
        torch.where(acc, value, state.value),
        _rows(acc, grad_safe, state.grad),
        _rows(acc, aux, state.aux),
    )
    return new, LangevinInfo(acc, log_alpha.to(value.dtype), eps, sigma)


def run(
    potential: Potential,
    position: torch.Tensor,
    cfg: LangevinConfig,
    *,
    rng: torch.Generator | None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[LangevinState, dict]:
    """Run ``cfg.steps`` updates from ``position``; returns the final state and counters."""
    state = init(position, potential)
    start_value = state.value
    accepted = torch.zeros(len(position), dtype=torch.float64, device=state.value.device)
    for t in range(cfg.steps):
        state, info = step(state, potential, cfg, t, rng=rng)
        accepted += info.accepted.double()
        if on_step is not None:
            on_step(t)
    stats = {
        "evaluations": cfg.steps + 1,  # potential evaluations (forward + backward) per chain
        "accepted": float(accepted.sum()),
        "start_value": start_value,
    }
    return state, stats


def run_chunked(
    potential_for: Callable[[torch.Tensor], Potential],
    start: Callable[[int], torch.Tensor],
    n: int,
    batch_size: int,
    cfg: LangevinConfig,
    *,
    rng: torch.Generator | None,
    progress: bool = False,
    desc: str = "langevin",
) -> tuple[LangevinState, dict]:
    """Run ``n`` chains in chunks of ``batch_size`` (bounded memory).

    ``start(c)`` draws ``c`` starting positions; ``potential_for(v0)`` returns the potential
    for chains started at ``v0`` (most methods ignore ``v0``; DOT anchors its transport cost there).
    """
    states, starts = [], []
    accepted = 0.0
    bar = tqdm(total=n * cfg.steps, desc=desc, unit="step", disable=not progress, leave=False)
    try:
        for c0 in range(0, n, batch_size):
            c = min(batch_size, n - c0)
            v0 = start(c)
            st, stats = run(potential_for(v0), v0, cfg, rng=rng, on_step=lambda _t, c=c: bar.update(c))
            states.append(st)
            starts.append(stats["start_value"])
            accepted += stats["accepted"]
    finally:
        bar.close()
    final = LangevinState(*(_cat([getattr(s, f) for s in states]) for f in LangevinState._fields))
    return final, {"evaluations_per_chain": cfg.steps + 1, "accepted": accepted, "start_value": torch.cat(starts)}


# --------------------------------------------------------------------------- potentials
#: f-divergence weights of DGflow as potentials of the log ratio ``d``: ``F'(d) = s(d)``.
#: KL: s = 1 (F = d); logD: s = sigmoid(-d) (F = log sigmoid(d) = log D); JS: s = sigmoid(d) (F = softplus(d) = log(1 + r)).
DIVERGENCES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "KL": (lambda d: d, lambda d: torch.ones_like(d)),
    "logD": (torch.nn.functional.logsigmoid, lambda d: torch.sigmoid(-d)),
    "JS": (torch.nn.functional.softplus, torch.sigmoid),
}


def _ratio_view(target):
    """The same generator and ratio without the prior term (``value_and_grad`` then returns log r)."""
    if not target.prior_term:
        return target
    return type(target)(target.generator, target.ratio, prior_term=False)


def latent_potential(target, *, prior: bool = True, transform: str | None = None, scale: float = 1.0) -> Potential:
    """``U(z) = scale * F(log r(G(z))) [+ log p0(z)]`` with ``aux = (G(z), log r(G(z)))``.

    Gradients come from ``target.value_and_grad`` (they reach ``z`` only); ``F`` is one of
    :data:`DIVERGENCES` (``None``: the identity) and the prior term is added analytically.
    """
    view = _ratio_view(target)
    p0 = target.prior
    f, fprime = DIVERGENCES[transform] if transform is not None else (None, None)

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


def check_ratio_differentiable(target) -> None:
    """Raise NotDifferentiableError unless gradients of ``log r(x)`` reach ``x`` (data-space methods)."""
    if getattr(target.ratio, "differentiable", True) is False:
        raise NotDifferentiableError(
            f"the ratio {target.ratio!r} is not differentiable; use a sampler that needs no gradients (rs, drs, mh, sir)"
        )
    z = target.prior.sample(2, rng=torch.Generator().manual_seed(0), device=target.device)
    with torch.no_grad():
        x = target.generator(z)
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = target.log_ratio(x)
        g = torch.autograd.grad(out.sum(), x, allow_unused=True)[0] if out.requires_grad else None
    if g is None:
        raise NotDifferentiableError(
            "no gradient flows from log r(x) to x (the ratio detaches its output, or runs under no_grad)"
        )


# --------------------------------------------------------------------------- sampler base
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


OUTPUT_BOUNDS = {"[-1,1]": (-1.0, 1.0), "[0,1]": (0.0, 1.0)}


def output_bounds(generator) -> Optional[tuple[float, float]]:
    """The declared value range of a generator's outputs (``[-1,1]``, ``[0,1]``), else None."""
    return OUTPUT_BOUNDS.get(getattr(generator, "output_range", "none"))


@dataclass(frozen=True)
class GradientSampler(Sampler):
    """Base of the gradient samplers: the engine's switches as options, chunked runs, pass counts.

    Subclasses redeclare defaults and implement :meth:`_plan` returning a :class:`Plan`.
    ``info`` counts, per output sample, forward (``g_evals``, ``d_evals``) and backward
    (``g_backward``, ``d_backward``) passes through the generator and the ratio network.
    """

    needs_gradients: typing.ClassVar[bool] = True

    step_size: float = option(0.01, "step size eps: drift (eps/2) * grad log pi")
    steps: int = option(100, "updates per chain")
    noise_scale: float = option(1.0, "noise sigma = noise_scale * sqrt(eps) (1: Langevin, 0: gradient ascent)")
    noise: Optional[float] = option(None, "fixed noise sigma, overrides noise_scale")
    decay: float = option(1.0, "step-size decay per step: eps_t = eps * decay^t, in (0, 1]")
    clip: Optional[float] = option(None, "clip each element of the drift gradient to [-clip, clip]")
    temperature: float = option(1.0, "sample exp(log pi / temperature)")
    mala: bool = option(False, "Metropolis-adjusted (MALA): exact for the target at any step size")
    batch_size: int = option(4096, "chains run together (memory bound)")

    def __post_init__(self) -> None:
        validate_common(
            self.step_size, self.steps, self.noise_scale, self.noise, self.decay, self.clip, self.temperature
        )
        positive("batch_size", self.batch_size)
        self._config(None)  # validates the combination (e.g. mala without noise)

    def _config(self, bounds) -> LangevinConfig:
        return LangevinConfig(
            step_size=float(self.step_size),
            steps=int(self.steps),
            noise_scale=float(self.noise_scale),
            noise=None if self.noise is None else float(self.noise),
            decay=float(self.decay),
            clip=None if self.clip is None else float(self.clip),
            temperature=float(self.temperature),
            mala=bool(self.mala),
            bounds=bounds,
        )

    def planned_evals(self, n: int) -> float:
        return float(n) * (3 * self.steps + 1)  # each step: one forward and one backward (twice a forward) pass

    def _plan(self, target, n: int, rng, real) -> Plan:
        raise NotImplementedError

    def _check_gradients(self, target) -> None:
        """Latent-space methods need ``d log r(G(z)) / dz``; data-space ones only ``d log r(x) / dx``."""
        if not self.moves_in_data_space:
            target.check_differentiable()
        else:
            check_ratio_differentiable(target)

    def sample(self, target, n, *, rng=None, progress=False, real=None) -> SampleResult:
        n = self._check_n(n)
        t0 = time.perf_counter()
        self._check_gradients(target)  # a clear error up front, whatever the entry point
        plan = self._plan(target, n, rng, real)
        state, stats = run_chunked(
            plan.potential_for,
            plan.start,
            n,
            int(self.batch_size),
            self._config(plan.bounds),
            rng=rng,
            progress=progress,
            desc=self.name,
        )
        x, log_r = state.aux
        evals = stats["evaluations_per_chain"]
        latent = plan.space == "latent"
        info = {
            "method": self.name,
            "n": n,
            "space": plan.space,
            "steps": int(self.steps),
            "g_evals": (evals if latent else 1) * n + plan.extra_g_total,
            "d_evals": evals * n + plan.extra_d_total,
            "g_backward": (evals if latent else 0) * n + plan.extra_g_backward_total,
            "d_backward": evals * n + plan.extra_d_backward_total,
        }
        for k in ("g_evals", "d_evals", "g_backward", "d_backward"):
            info[f"{k}_per_sample"] = info[k] / n
        if self.mala:
            info["acceptance_rate"] = stats["accepted"] / (n * int(self.steps))
        info["potential_start_mean"] = float(stats["start_value"].double().mean())
        info["potential_end_mean"] = float(state.value.double().mean())
        info["log_ratio_end_mean"] = float(log_r.double().mean())
        info.update(plan.info or {})
        info["wall_time_s"] = time.perf_counter() - t0
        # data-space chains move x away from G(z): there is no latent for the output, so z is None
        z = state.position.detach() if latent else None
        return SampleResult(x.detach(), z, info)
