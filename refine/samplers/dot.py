"""Discriminator Optimal Transport (DOT; Tanaka 2019).

DOT moves each generated sample ``y`` to the point that best trades transport cost
against the critic:

- ``space="data"``:  ``x* = argmin_x ||x - y|| - D(x) / K_eff``,
  ``K_eff = max |D(x1) - D(x2)| / ||x1 - x2||`` over pairs of generated samples;
- ``space="latent"``: ``z* = argmin_z ||z - z_y|| - D(G(z)) / k_eff``,
  ``k_eff = max |D(G(z1)) - D(G(z2))| / ||z1 - z2||`` over pairs of latents.

The defaults follow the reference code (``AkinoriTanaka-phys/DOT``, its 2-D demo):

- ``optimizer="adam"``: each sample's objective is minimised by Adam (``lr`` 0.01,
  ``beta1`` 0, ``beta2`` 0.9, eps 1e-8, bias-corrected), ``steps`` 100 updates. Adam's
  moments are kept per element, so each sample moves on its own and the batch size does
  not change the result. ``optimizer="sgd"`` is plain gradient descent run by the shared
  engine with no noise (``step_size = 2 * lr`` of the reference's SGD); the engine's
  switches (noise, decay, clip, temperature) apply to it only.
- ``K_eff`` (or ``k_eff``) is the mean of ``k_eff_repeats`` (10) estimates, each a maximum
  over ``pairs`` (100) fresh pairs drawn from the sampler's ``rng`` (the reference's
  2-D demo averages 10 such maxima; its image runs take one). A single maximum over 100
  pairs varies several-fold from seed to seed; the mean of 10 varies far less.
- Spectral-norm layers (``torch.nn.utils.spectral_norm`` or
  ``torch.nn.utils.parametrizations.spectral_norm``) in the generator or the ratio are
  *thermalised* first: ``thermalize`` (100) forward passes of 10 generated samples
  without gradients, with only those layers in training mode, run their power iteration
  so that the normalised weights are converged (the reference does the same before DOT).
  The sample is drawn with the thermalised estimates; afterwards the layers' buffers
  (``weight_u``/``weight_v`` or ``_u``/``_v``) and training flags are put back as they
  were, so the user's modules are left exactly as given. Nothing else is put in
  training mode (BatchNorm statistics are not touched). Without such layers nothing runs.

The norm is smoothed, ``sqrt(||v||^2 + 1e-6)``, so its gradient exists at the start.

Latent constraints: with a uniform prior, ``z`` is clamped to the prior's box. With a
normal prior, ``sphere=True`` projects each update onto the tangent space of the sphere
through ``z`` (``g - z (g.z) / ||z||^2``, each sample's own norm; the reference code
divides by a hard-coded ``sqrt(128)`` instead), which keeps ``||z||`` (almost) constant;
with Adam the update itself is projected too (the reference projects the gradient only).
Data-space samples are clamped to the generator's declared output range.

How the ratio is read: ``D = target.log_ratio`` (a WGAN critic's value, or a logit).
``K_eff`` is estimated from the same scores, so DOT is unchanged when the scores are
scaled (a critic's temperature cancels): it uses the critic value directly.
``k_eff`` (or ``K_eff``) can also be given instead of estimated.

``space="data"`` is spelled as DCD spells it; the older ``space="target"`` (from the
paper's "target space") means the same and is still accepted, with a DeprecationWarning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
import typing
import warnings
from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch
from torch import nn
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.nn.utils.spectral_norm import SpectralNorm

from ..errors import ConfigError, NonFiniteError
from ._ops import evaluate, positive
from .base import SampleResult, option, register
from .gradient import (
    GradientSampler,
    Plan,
    generated_start,
    output_bounds,
    prior_bounds,
    prior_start,
    ratio_only,
    ratio_value_and_grad,
)
from .langevin import LangevinState, Potential, _check_eval, init, run_chunked

__all__ = ["DOTSampler", "estimate_k_eff", "k_eff_maxima", "dot_objective", "spectral_norm_layers", "thermalised"]

_SMOOTH = 1e-6  # squared smoothing of the transport norm
_ADAM_EPS = 1e-8
_THERMAL_BATCH = 10  # generated samples per thermalising pass (as in the reference)


def _norm(v: torch.Tensor) -> torch.Tensor:
    return (v.flatten(1).pow(2).sum(1) + _SMOOTH).sqrt()


@torch.no_grad()
def k_eff_maxima(target, pairs: int, *, space: str, rng, repeats: int = 1, batch_size: int = 4096) -> torch.Tensor:
    """``repeats`` estimates of the Lipschitz constant, each ``max |D(a) - D(b)| / ||a - b||``
    over its own ``pairs`` fresh pairs of generated samples (``space="data"``) or latents; ``(repeats,)``.

    All ``2 * repeats * pairs`` latents are drawn from ``rng`` at once (first sides, then
    second sides) and scored in batches of ``batch_size``. A repeat whose pairs all coincide
    (a collapsed generator), or a critic constant on every pair, is an error.
    """
    space = _data_space(space)
    pairs, repeats = int(pairs), int(repeats)
    m = pairs * repeats
    z1 = target.prior.sample(m, rng=rng, device=target.device)
    z2 = target.prior.sample(m, rng=rng, device=target.device)
    d1, x1 = evaluate(target, z1, batch_size)
    d2, x2 = evaluate(target, z2, batch_size)
    den = (x1 - x2).flatten(1).norm(dim=1) if space == "data" else (z1 - z2).flatten(1).norm(dim=1)
    ok = (den > 0).view(repeats, pairs)
    if not bool(ok.any(1).all()):
        raise ConfigError(
            "cannot estimate K_eff: every pair of generated samples coincides (a collapsed generator); pass -o k_eff=VALUE"
        )
    quot = ((d1 - d2).abs() / torch.where(den > 0, den, torch.ones_like(den))).view(repeats, pairs)
    maxima = torch.where(ok, quot, torch.full_like(quot, -math.inf)).max(1).values
    k = float(maxima.double().mean())
    if not k > 0:
        raise ConfigError(
            f"estimated K_eff is {k}: the critic is constant on {pairs} pairs of samples; pass -o k_eff=VALUE"
        )
    return maxima


def estimate_k_eff(target, pairs: int, *, space: str, rng, repeats: int = 1, batch_size: int = 4096) -> float:
    """The mean of ``repeats`` maxima of ``|D(a) - D(b)| / ||a - b||``, each over ``pairs`` fresh pairs
    of generated samples (``space="data"``) or latents (see :func:`k_eff_maxima`)."""
    maxima = k_eff_maxima(target, pairs, space=space, rng=rng, repeats=repeats, batch_size=batch_size)
    return float(maxima.double().mean())


def _modules_of(obj) -> list[nn.Module]:
    if isinstance(obj, nn.Module):
        return [obj]
    return [v for v in vars(obj).values() if isinstance(v, nn.Module)] if hasattr(obj, "__dict__") else []


def spectral_norm_layers(*objs) -> list[nn.Module]:
    """The modules whose training flag drives a spectral norm's power iteration, in ``objs``
    (modules, or wrappers such as a ``LatentGenerator`` or ``DiscriminatorRatio`` holding them):
    layers with a ``torch.nn.utils.spectral_norm`` hook and ``parametrizations.spectral_norm`` parametrizations."""
    found: dict[int, nn.Module] = {}
    for obj in objs:
        for root in _modules_of(obj):
            for m in root.modules():
                if isinstance(m, _SpectralNorm) or any(
                    isinstance(h, SpectralNorm) for h in m._forward_pre_hooks.values()
                ):
                    found.setdefault(id(m), m)
    return list(found.values())


@contextlib.contextmanager
def thermalised(target, passes: int, *, rng):
    """Within the block, the spectral-norm layers of ``target`` have run ``passes`` power iterations.

    Each pass is a forward pass, without gradients, of ``G`` and the ratio on 10 samples from
    the prior, with only the spectral-norm layers in training mode. Yields the number of
    generated samples used (0 when there is no such layer and nothing ran). On leaving,
    their buffers (the power iteration's vectors) are restored, so the modules are as given.
    """
    layers = spectral_norm_layers(target.generator, target.ratio) if passes > 0 else []
    if not layers:
        yield 0
        return
    saved = [(b, b.detach().clone()) for m in layers for b in m.buffers(recurse=False)]
    modes = [(m, m.training) for m in layers]
    try:
        try:
            for m in layers:
                m.train(True)
            with torch.no_grad():
                for _ in range(int(passes)):
                    z = target.prior.sample(_THERMAL_BATCH, rng=rng, device=target.device)
                    target.log_ratio(target.generator(z))
        finally:
            for m, mode in modes:
                m.train(mode)
        yield int(passes) * _THERMAL_BATCH
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


def adam_run(
    potential: Potential,
    position: torch.Tensor,
    *,
    steps: int,
    lr: float,
    betas: tuple[float, float],
    bounds,
    tangent: bool,
    on_step=None,
) -> tuple[LangevinState, dict]:
    """Adam on the negative potential of each chain (minimises DOT's objective): one chunk, for
    :func:`~refine.samplers.langevin.run_chunked` in place of the Langevin update.

    Per-element moments, bias-corrected; positions clamped to ``bounds`` after each update.
    ``tangent``: each update is projected onto the tangent space of the sphere through the
    position (Adam's per-element scaling would otherwise take a tangent gradient off it).
    Like the engine, a chain of ``steps`` updates costs ``steps + 1`` evaluations and the
    final state holds the potential at its position.
    """
    b1, b2 = betas
    st = init(position, potential)
    start_value = st.value
    m1 = torch.zeros_like(st.position)
    m2 = torch.zeros_like(st.position)
    for t in range(1, steps + 1):
        g = -st.grad  # the objective's gradient
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g * g
        upd = (m1 / (1 - b1**t)) / ((m2 / (1 - b2**t)).sqrt() + _ADAM_EPS)
        if tangent:
            zf, uf = st.position.flatten(1), upd.flatten(1)
            zz = zf.pow(2).sum(1, keepdim=True)
            upd = (uf - zf * (uf * zf).sum(1, keepdim=True) / zz).view_as(upd)
        v = st.position - lr * upd
        if bounds is not None:
            v = v.clamp(*bounds)
        value, grad, aux = potential(v)
        _check_eval(value, grad, t, allow_neg_inf=False)
        st = LangevinState(v.detach(), value.detach(), grad.detach(), aux)
        if on_step is not None:
            on_step(t)
    return st, {"evaluations": steps + 1, "accepted": 0.0, "start_value": start_value}


def _data_space(space: str) -> str:
    """``"target"``, DOT's old name for data space, as ``"data"`` (with a DeprecationWarning)."""
    if space == "target":
        warnings.warn(
            'DOT\'s space="target" is now space="data" (as DCD spells it; same meaning)',
            DeprecationWarning,
            stacklevel=3,
        )
        return "data"
    return space


def dot_objective(target, v: torch.Tensor, anchor: torch.Tensor, k: float, *, space: str) -> torch.Tensor:
    """The DOT objective ``||v - anchor|| - D(.) / k`` (to be minimised), per sample."""
    space = _data_space(space)
    with torch.no_grad():
        x = target.generator(v) if space == "latent" else v
        return _norm(v - anchor) - target.log_ratio(x) / k


@register("dot")
@dataclass(frozen=True)
class DOTSampler(GradientSampler):
    summary = "DOT: minimise ||x - y|| - D(x)/K_eff (data space) or ||z - z_y|| - D(G(z))/k_eff (latent space)"
    renamed_values: typing.ClassVar[dict[str, dict[Any, Any]]] = {"space": {"target": "data"}}

    optimizer: Literal["adam", "sgd"] = option(
        "adam", "adam (the reference's 2-D demo: per-sample Adam on the objective) or sgd (plain gradient descent)"
    )
    lr: float = option(0.01, "Adam's learning rate (optimizer=adam)")
    beta1: float = option(0.0, "Adam's first-moment decay (optimizer=adam)")
    beta2: float = option(0.9, "Adam's second-moment decay (optimizer=adam)")
    step_size: float = option(0.02, "step size eps = 2 lr of the gradient descent (optimizer=sgd)")
    steps: int = option(100, "updates per sample")
    noise_scale: float = option(0.0, "noise sigma = noise_scale * sqrt(eps) (optimizer=sgd; DOT is deterministic: 0)")
    space: Literal["data", "latent"] = option(
        "data", "transport in data space (x; formerly space=target) or in latent space (z)"
    )
    pairs: int = option(100, "pairs of generated samples in each K_eff / k_eff estimate (a max over pairs)")
    k_eff_repeats: int = option(10, "K_eff / k_eff is the mean of this many estimates, each on fresh pairs")
    k_eff: Optional[float] = option(
        None, "the Lipschitz constant K_eff (data) or k_eff (latent); none: estimate from pairs"
    )
    thermalize: int = option(
        100,
        "forward passes (10 samples each) that converge spectral-norm layers first; their buffers are restored after",
    )
    sphere: bool = option(False, "normal prior, latent space: project updates onto the sphere through z (keeps ||z||)")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "space", _data_space(self.space))
        if self.mala:
            raise ConfigError("dot is an optimisation, not a sampler of a density: mala does not apply")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"dot's optimizer must be adam or sgd, got {self.optimizer!r}")
        positive("pairs", self.pairs)
        positive("k_eff_repeats", self.k_eff_repeats)
        positive("k_eff", self.k_eff)
        positive("thermalize", self.thermalize, allow_zero=True)
        positive("lr", self.lr)
        for name in ("beta1", "beta2"):
            b = getattr(self, name)
            if not (0.0 <= float(b) < 1.0):
                raise ConfigError(f"{name} must lie in [0, 1), got {b}")
        if self.optimizer == "adam":
            engine = {
                "noise_scale": self.noise_scale != 0.0,
                "noise": self.noise is not None,
                "decay": self.decay != 1.0,
                "clip": self.clip is not None,
                "potential_temperature": self.potential_temperature != 1.0,
            }
            set_ = [k for k, v in engine.items() if v]
            if set_:
                raise ConfigError(
                    f"dot option(s) {', '.join(set_)} apply to optimizer=sgd only; drop them or pass -o optimizer=sgd"
                )

    def _estimates_k(self) -> bool:
        return self.k_eff is None

    def _thermal_rows(self) -> int:
        return int(self.thermalize) * _THERMAL_BATCH

    def planned_evals(self, n: int) -> float:
        # the chains, the K_eff pairs (two latents per pair) and, at most, the thermalising passes
        pairs = 2.0 * self.pairs * self.k_eff_repeats if self._estimates_k() else 0.0
        return super().planned_evals(n) + pairs + float(self._thermal_rows())

    def rows_in_memory(self) -> int:
        pairs = 2 * int(self.pairs) * int(self.k_eff_repeats) if self._estimates_k() else 0
        return max(super().rows_in_memory(), pairs)

    @property
    def moves_in_data_space(self) -> bool:
        return self.space == "data"

    def _extras(self, extras: dict[str, Any]) -> dict[str, Any]:
        # the potential is minus the objective
        return {
            **extras,
            "objective_start_mean": -extras["potential_start_mean"],
            "objective_end_mean": -extras["potential_end_mean"],
        }

    def _plan(self, target, n, rng, real) -> Plan:
        extra = 0
        info: dict[str, Any] = {"space_transport": self.space, "optimizer": self.optimizer}
        if self.k_eff is None:
            maxima = k_eff_maxima(
                target,
                int(self.pairs),
                space=self.space,
                rng=rng,
                repeats=int(self.k_eff_repeats),
                batch_size=int(self.batch_size),
            )
            k = float(maxima.double().mean())
            extra = 2 * int(self.pairs) * int(self.k_eff_repeats)
            info.update(k_eff_min=float(maxima.min()), k_eff_max=float(maxima.max()))
        else:
            k = float(self.k_eff)
        info["k_eff"] = k
        if self.space == "data":
            start, _ = generated_start(target, n, rng)

            def potential_for(y: torch.Tensor):
                def pot(x: torch.Tensor):
                    d, g = ratio_value_and_grad(target, x)
                    diff = x - y
                    nrm = _norm(diff)
                    value = d / k - nrm
                    grad = g / k - diff / nrm.view(-1, *([1] * (diff.dim() - 1)))
                    return value, grad, (x.detach(), d)

                return pot

            return Plan(
                potential_for,
                start,
                "data",
                bounds=output_bounds(target.generator),
                extra_g_total=extra,
                extra_d_total=extra,
                info=info,
            )

        view = ratio_only(target)
        sphere = bool(self.sphere)
        if sphere and prior_bounds(target) is not None:
            raise ConfigError(
                "sphere=True applies to a normal prior; this target's prior is uniform (its box is enforced instead)"
            )

        def potential_for(zy: torch.Tensor):
            def pot(z: torch.Tensor):
                d, gd, x = view.value_and_grad(z)
                diff = z - zy
                nrm = _norm(diff)
                value = d / k - nrm
                grad = gd / k - diff / nrm.view(-1, *([1] * (diff.dim() - 1)))
                if sphere:
                    zf, gf = z.flatten(1), grad.flatten(1)
                    zz = zf.pow(2).sum(1, keepdim=True)
                    if bool((zz == 0).any()):
                        raise NonFiniteError("sphere projection at z = 0; use sphere=False")
                    grad = (gf - zf * (gf * zf).sum(1, keepdim=True) / zz).view_as(grad)
                return value, grad, (x, d)

            return pot

        return Plan(
            potential_for,
            prior_start(target, rng),
            "latent",
            bounds=prior_bounds(target),
            extra_g_total=extra,
            extra_d_total=extra,
            info=info,
        )

    def _run(self, plan: Plan, n: int, *, rng, progress: bool):
        if self.optimizer == "sgd":
            return super()._run(plan, n, rng=rng, progress=progress)
        chain = functools.partial(
            adam_run,
            steps=int(self.steps),
            lr=float(self.lr),
            betas=(float(self.beta1), float(self.beta2)),
            bounds=plan.bounds,
            tangent=bool(self.sphere) and plan.space == "latent",
        )
        return run_chunked(
            plan.potential_for,
            plan.start,
            n,
            int(self.batch_size),
            self._config(plan.bounds),
            rng=rng,
            progress=progress,
            desc=self.name,
            chain=chain,
        )

    def sample(self, target, n, *, rng=None, progress=False, real=None) -> SampleResult:
        t0 = time.perf_counter()
        with thermalised(target, int(self.thermalize), rng=rng) as rows:
            result = super().sample(target, n, rng=rng, progress=progress, real=real)
        info = dataclasses.replace(
            result.info,
            g_evals=result.info.g_evals + rows,
            d_evals=result.info.d_evals + rows,
            wall_time_s=time.perf_counter() - t0,
            extras={**result.info.extras, "thermalized_rows": rows},
        )
        return SampleResult(result.x, result.z, info)
