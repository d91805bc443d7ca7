"""Discriminator Optimal Transport (DOT; Tanaka 2019).

DOT moves each generated sample ``y`` to the point that best trades transport cost
against the critic:

- ``space="data"``:  ``x* = argmin_x ||x - y|| - D(x) / K_eff``,
  ``K_eff = max |D(x1) - D(x2)| / ||x1 - x2||`` over pairs of generated samples;
- ``space="latent"``: ``z* = argmin_z ||z - z_y|| - D(G(z)) / k_eff``,
  ``k_eff = max |D(G(z1)) - D(G(z2))| / ||z1 - z2||`` over pairs of latents.

The minimisation is plain gradient descent, run by the shared engine with no noise
(``step_size = 2 * lr`` of the reference; the objective is the negative potential). The
norm is smoothed, ``sqrt(||v||^2 + 1e-6)``, so its gradient exists at the start.

Latent constraints: with a uniform prior, ``z`` is clamped to the prior's box. With a
normal prior, ``sphere=True`` projects each update onto the tangent space of the sphere
through ``z`` (``g - z (g.z) / ||z||^2``, each sample's own norm; the reference code
divides by a hard-coded ``sqrt(128)`` instead), which keeps ``||z||`` (almost) constant.
Data-space samples are clamped to the generator's declared output range.

How the ratio is read: ``D = target.log_ratio`` (a WGAN critic's value, or a logit).
``K_eff`` is estimated from the same scores, so DOT is unchanged when the scores are
scaled (a critic's temperature cancels): it uses the critic value directly.
``k_eff`` (or ``K_eff``) can also be given instead of estimated.

``space="data"`` is spelled as DCD spells it; the older ``space="target"`` (from the
paper's "target space") means the same and is still accepted, with a DeprecationWarning.
"""

from __future__ import annotations

import typing
import warnings
from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch

from ..errors import ConfigError, NonFiniteError
from ._ops import evaluate, positive
from .base import option, register
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

__all__ = ["DOTSampler", "estimate_k_eff", "dot_objective"]

_SMOOTH = 1e-6  # squared smoothing of the transport norm


def _norm(v: torch.Tensor) -> torch.Tensor:
    return (v.flatten(1).pow(2).sum(1) + _SMOOTH).sqrt()


@torch.no_grad()
def estimate_k_eff(target, pairs: int, *, space: str, rng, batch_size: int = 4096) -> float:
    """``max |D(a) - D(b)| / ||a - b||`` over ``pairs`` pairs of generated samples (``space="data"``) or latents."""
    space = _data_space(space)
    z1 = target.prior.sample(pairs, rng=rng, device=target.device)
    z2 = target.prior.sample(pairs, rng=rng, device=target.device)
    d1, x1 = evaluate(target, z1, batch_size)
    d2, x2 = evaluate(target, z2, batch_size)
    den = (x1 - x2).flatten(1).norm(dim=1) if space == "data" else (z1 - z2).flatten(1).norm(dim=1)
    ok = den > 0
    if not bool(ok.any()):
        raise ConfigError(
            "cannot estimate K_eff: every pair of generated samples coincides (a collapsed generator); pass -o k_eff=VALUE"
        )
    k = float(((d1 - d2).abs()[ok] / den[ok]).max())
    if not k > 0:
        raise ConfigError(
            f"estimated K_eff is {k}: the critic is constant on {pairs} pairs of samples; pass -o k_eff=VALUE"
        )
    return k


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

    step_size: float = option(0.02, "step size eps = 2 lr of the gradient descent")
    steps: int = option(100, "gradient steps per sample")
    noise_scale: float = option(0.0, "noise sigma = noise_scale * sqrt(eps) (DOT is deterministic: 0)")
    space: Literal["data", "latent"] = option(
        "data", "transport in data space (x; formerly space=target) or in latent space (z)"
    )
    pairs: int = option(
        100, "pairs of generated samples used to estimate K_eff / k_eff (the max over pairs; as in the reference)"
    )
    k_eff: Optional[float] = option(
        None, "the Lipschitz constant K_eff (target) or k_eff (latent); none: estimate from pairs"
    )
    sphere: bool = option(False, "normal prior, latent space: project updates onto the sphere through z (keeps ||z||)")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "space", _data_space(self.space))
        if self.mala:
            raise ConfigError("dot is an optimisation, not a sampler of a density: mala does not apply")
        positive("pairs", self.pairs)
        positive("k_eff", self.k_eff)

    def planned_evals(self, n: int) -> float:
        return super().planned_evals(n) + (0.0 if self.k_eff is not None else 2.0 * self.pairs)

    def rows_in_memory(self) -> int:
        return max(super().rows_in_memory(), 2 * int(self.pairs))

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
        if self.k_eff is None:
            k = estimate_k_eff(target, int(self.pairs), space=self.space, rng=rng, batch_size=int(self.batch_size))
            extra = 2 * int(self.pairs)
        else:
            k = float(self.k_eff)
        info = {"k_eff": k, "space_transport": self.space}
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
