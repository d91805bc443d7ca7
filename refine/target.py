"""The latent target: ``log pi(z) = log p0(z) + log r(G(z))``.

Every sampler in refine acts on this one object. Rejection, MH and SIR propose from
the prior and need only the weight ``log r(G(z))``; gradient methods need
``grad_z log pi``. Gradients flow to ``z`` only: no parameter of the user's modules
gets a ``.grad``.
"""

from __future__ import annotations

import torch

from .errors import ConfigError, NonFiniteError, NotDifferentiableError
from .generator import LatentGenerator, network_error, unchanged_buffers
from .ratio.base import check_log_ratio

__all__ = ["LatentTarget", "check_finite", "check_gradients"]


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


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def check_gradients(
    generator: LatentGenerator,
    ratio,
    *,
    method: str = "this method",
    source: str | None = None,
    ratio_source: str | None = None,
    through_generator: bool = True,
    alternatives: str = "rs, drs, mh, sir",
) -> None:
    """Raise NotDifferentiableError (one line, naming the part) unless ``d log r(G(z)) / dz`` exists and is finite.

    Checked on two latents: the generator's output must depend on ``z`` with autograd
    tracking it, and the ratio's score must depend on its input. With
    ``through_generator=False`` (data-space methods) only the ratio is checked. The one
    differentiability check: the CLI's probes (:mod:`refine.checks`) and every gradient
    sampler (through :meth:`LatentTarget.check_differentiable`) run it.
    """
    gen_who = source or f"the generator ({type(generator.net).__name__})"
    alt = alternatives
    tail = f"method {method} needs gradients with respect to z; use a gradient-free method ({alt}) or a differentiable network"
    if ratio is not None and getattr(ratio, "differentiable", True) is False:
        raise NotDifferentiableError(
            f"the density ratio {ratio!r} is not differentiable (e.g. an isotonic calibration); {tail}"
        )
    if through_generator and generator.differentiable is False:
        raise NotDifferentiableError(f"{gen_who} is declared non-differentiable; {tail}")
    z = generator.prior.sample(2, rng=torch.Generator().manual_seed(0), device=generator.device)
    if not through_generator:
        with torch.no_grad(), unchanged_buffers(generator.net):
            x = generator(z)
        z = None
    else:
        z.requires_grad_(True)
    with torch.enable_grad(), unchanged_buffers(generator.net, getattr(ratio, "net", None)):
        try:
            x = generator(z) if z is not None else x
        except RuntimeError as e:
            raise NotDifferentiableError(
                f"{gen_who} fails when gradients are tracked: {_first_line(e)}; {tail}"
            ) from None
        if z is not None and not x.requires_grad:
            raise NotDifferentiableError(
                f"no gradient flows from the output of {gen_who} back to z (it runs under no_grad/inference mode or detaches its output); {tail}"
            )
        if z is not None:
            try:
                (g,) = torch.autograd.grad(x.float().sum(), z, allow_unused=True)
            except RuntimeError as e:
                raise NotDifferentiableError(f"{gen_who} cannot be differentiated: {_first_line(e)}; {tail}") from None
            if g is None:
                raise NotDifferentiableError(f"the output of {gen_who} does not depend on z through autograd; {tail}")
            if not torch.isfinite(g).all():
                raise NotDifferentiableError(f"{gen_who} has NaN/inf gradients with respect to z; {tail}")
        if ratio is None:
            return
        r_who = ratio_source or f"the discriminator ({type(getattr(ratio, 'net', ratio)).__name__})"
        xd = x.detach().requires_grad_(True)
        try:
            s = ratio.log_ratio(xd)
        except RuntimeError as e:
            raise NotDifferentiableError(
                f"{r_who} fails when gradients are tracked: {_first_line(e)}; {tail}"
            ) from None
        if not isinstance(s, torch.Tensor) or not s.requires_grad:
            raise NotDifferentiableError(
                f"no gradient flows through {r_who} to its input (it runs under no_grad/inference mode or detaches its score); {tail}"
            )
        try:
            (gx,) = torch.autograd.grad(s.float().sum(), xd, allow_unused=True)
        except RuntimeError as e:
            raise NotDifferentiableError(f"{r_who} cannot be differentiated: {_first_line(e)}; {tail}") from None
        if gx is None or not torch.isfinite(gx).all():
            raise NotDifferentiableError(f"{r_who} has no finite gradient with respect to its input; {tail}")


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

    def check_differentiable(self, *, method: str = "this method", through_generator: bool = True, **hint) -> None:
        """Raise up front (NotDifferentiableError, one line) unless gradients reach ``z``, or with
        ``through_generator=False`` (data-space methods) ``x``: :func:`check_gradients`, run once per
        target and kind (a sampler called again on the same target does not probe again)."""
        if self.ratio is None:
            raise ConfigError(
                "this target has no density ratio; gradient methods need one: pass a discriminator or ratio"
            )
        checked = self.__dict__.setdefault("_gradients_checked", set())
        if through_generator in checked:
            return
        check_gradients(self.generator, self.ratio, method=method, through_generator=through_generator, **hint)
        checked.add(through_generator)

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
