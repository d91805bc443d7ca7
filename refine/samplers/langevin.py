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

This module is the engine alone: it knows potentials only as functions
``position -> (U, grad U, aux)``. What a potential is made of (the latent target, the
ratio in data space, DGflow's divergences, DOT's transport cost), where chains start,
the boxes they stay in and the registered samplers' common base live in
:mod:`refine.samplers.gradient` and in each method's own file.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, NonFiniteError
from ._ops import accept_log, positive

__all__ = [
    "LangevinConfig",
    "LangevinState",
    "LangevinInfo",
    "Potential",
    "init",
    "step",
    "run",
    "run_chunked",
    "validate_common",
    "normal_noise",
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


def validate_common(
    step_size, steps, noise_scale, noise, decay, clip, temperature, *, temperature_name: str = "temperature"
) -> None:
    """Check the shared switches; each message names the option (``temperature_name``: the tempering's)."""
    positive("step_size", step_size)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    positive("noise_scale", noise_scale, allow_zero=True)
    positive("noise", noise, allow_zero=True)
    if not (0.0 < float(decay) <= 1.0):
        raise ConfigError(f"decay (per-step step-size factor) must lie in (0, 1], got {decay}")
    positive("clip", clip)
    positive(temperature_name, temperature)


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
    chain: Callable[..., tuple[LangevinState, dict]] | None = None,
) -> tuple[LangevinState, dict]:
    """Run ``n`` chains in chunks of ``batch_size`` (bounded memory).

    ``start(c)`` draws ``c`` starting positions; ``potential_for(v0)`` returns the potential
    for chains started at ``v0`` (most methods ignore ``v0``; DOT anchors its transport cost there).
    ``chain(potential, position, on_step=)`` runs one chunk in place of :func:`run` with ``cfg``
    (DOT's Adam); it returns ``(state, stats)`` as :func:`run` does and takes ``cfg.steps`` steps.
    """
    if chain is None:
        chain = functools.partial(run, cfg=cfg, rng=rng)
    states, starts = [], []
    accepted = 0.0
    bar = tqdm(total=n * cfg.steps, desc=desc, unit="step", disable=not progress, leave=False)
    try:
        for c0 in range(0, n, batch_size):
            c = min(batch_size, n - c0)
            v0 = start(c)
            st, stats = chain(potential_for(v0), v0, on_step=lambda _t, c=c: bar.update(c))
            states.append(st)
            starts.append(stats["start_value"])
            accepted += stats["accepted"]
    finally:
        bar.close()
    final = LangevinState(*(_cat([getattr(s, f) for s in states]) for f in LangevinState._fields))
    return final, {"evaluations_per_chain": cfg.steps + 1, "accepted": accepted, "start_value": torch.cat(starts)}
