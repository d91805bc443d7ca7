"""The latent target: ``log pi(z) = log p0(z) + log r(G(z))``.

Every sampler in refine acts on this one object. Rejection, MH and SIR propose from
the prior and need only the weight ``log r(G(z))``; gradient methods need
``grad_z log pi``. Gradients flow to ``z`` only: no parameter of the user's modules
gets a ``.grad``.
"""

from __future__ import annotations

import torch

from .errors import ConfigError, NonFiniteError, NotDifferentiableError
from .generator import LatentGenerator, network_error
from .ratio.base import check_log_ratio

__all__ = ["LatentTarget", "check_finite"]


def check_finite(t: torch.Tensor, what: str, hint: str = "") -> torch.Tensor:
    """Raise a NonFiniteError naming ``what`` if ``t`` holds NaN or inf."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        n_nan = int(torch.isnan(t).sum())
        idx = int(bad.flatten().nonzero()[0, 0])
        kind = "NaN" if n_nan else "inf"
        msg = f"{what} is {kind} for {int(bad.sum())} of {t.numel()} entries (first at index {idx})"
        raise NonFiniteError(msg + (f"; {hint}" if hint else ""))
    return t


class LatentTarget:
    """``pi(z) ∝ p0(z) r(G(z))`` from a :class:`LatentGenerator` and a density ratio.

    ``prior_term=False`` drops ``log p0`` from the density (for methods that act on
    ``log r`` alone); the proposal distribution is still the prior. ``ratio=None`` is the
    raw generator: method ``none`` samples it, and anything that asks for ``log r`` gets
    a ConfigError.
    """

    def __init__(self, generator: LatentGenerator, ratio=None, *, prior_term: bool = True) -> None:
        if not isinstance(generator, LatentGenerator):
            raise ConfigError(
                f"generator must be a refine.LatentGenerator, got {type(generator).__name__}; wrap your network with refine.wrap(...)"
            )
        if ratio is not None and not hasattr(ratio, "log_ratio"):
            raise ConfigError(f"ratio must have log_ratio(x), got {type(ratio).__name__}")
        self.generator = generator
        self.ratio = ratio
        self.prior_term = prior_term

    @property
    def prior(self):
        return self.generator.prior

    @property
    def device(self) -> torch.device:
        return self.generator.device

    def log_ratio(self, x: torch.Tensor) -> torch.Tensor:
        if self.ratio is None:
            raise ConfigError(
                "this target has no density ratio; only method 'none' runs without one: pass a discriminator or ratio"
            )
        try:
            out = self.ratio.log_ratio(x)
        except RuntimeError as e:
            err = network_error(
                e,
                "ratio",
                x,
                "the ratio does not fit this generator's samples (was it fitted for another generator or dataset?)",
            )
            if err is None:
                raise
            raise err from e
        return check_log_ratio(out, x.shape[0], "ratio")

    @torch.no_grad()
    def log_weight(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log r(G(z)), G(z))`` without gradients; raises on NaN/inf scores."""
        x = self.generator(z)
        lw = self.log_ratio(x)
        check_finite(lw, "log r(G(z))", "check the discriminator's output and calibration")
        return lw, x

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        x = self.generator(z)
        lw = self.log_ratio(x)
        return lw + self.prior.log_prob(z) if self.prior_term else lw

    def check_differentiable(self) -> None:
        """Raise NotDifferentiableError up front if gradients cannot reach ``z``."""
        if self.ratio is None:
            raise ConfigError(
                "this target has no density ratio; gradient methods need one: pass a discriminator or ratio"
            )
        if getattr(self.ratio, "differentiable", True) is False:
            raise NotDifferentiableError(
                f"the ratio {self.ratio!r} is not differentiable; use a sampler that needs no gradients (rs, drs, mh, sir) or an uncalibrated/logistic ratio"
            )
        if self.generator.differentiable is False:
            raise NotDifferentiableError(
                "the generator is marked non-differentiable; gradient methods need gradients from x back to z"
            )
        z = self.generator.sample_latent(2, rng=torch.Generator().manual_seed(0)).requires_grad_(
            True
        )  # never touch the global RNG
        with torch.enable_grad():
            try:
                out = self.log_ratio(
                    self.generator(z)
                ).sum()  # not log_density: the prior term alone would require grad
            except RuntimeError as e:  # pragma: no cover - depends on the user's network
                raise NotDifferentiableError(f"evaluating the target with gradients failed: {e}") from None
            # requires_grad alone is not enough: the ratio's own parameters may require grad
            g = torch.autograd.grad(out, z, allow_unused=True)[0] if out.requires_grad else None
            if g is None:
                raise NotDifferentiableError(
                    "no gradient flows from log r(G(z)) to z (the generator or ratio detaches its output, or runs under no_grad)"
                )

    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log pi(z), grad_z log pi(z), G(z))``; gradients reach ``z`` only."""
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            x = self.generator(z)
            lw = self.log_ratio(x)
            lp = lw + self.prior.log_prob(z) if self.prior_term else lw
            (g,) = torch.autograd.grad(lp.sum(), z)
        return lp.detach(), g, x.detach()

    def __repr__(self) -> str:
        return f"LatentTarget({self.generator!r}, {self.ratio!r}, prior_term={self.prior_term})"
