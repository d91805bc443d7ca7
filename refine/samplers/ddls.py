"""Discriminator Driven Latent Sampling (DDLS; Che et al. 2020).

A GAN's generator and discriminator define an energy-based model in latent space,

    E(z) = -log p0(z) - d(G(z)),

with ``d`` the discriminator's logit (for a calibrated discriminator, ``d = log r``).
DDLS runs Langevin dynamics on ``exp(-E)``, i.e. on the latent target
``log p0(z) + log r(G(z))`` itself:

    z <- z + (eps/2) grad_z log pi(z) + sqrt(eps) xi.

How the ratio is read: ``d = target.log_ratio(G(z))``. For a logit discriminator that
is the logit (divided by the ratio's temperature, 1 by default); for a WGAN critic
(``DiscriminatorRatio(net, "critic", temperature=T)``) it is ``critic / T``, the
convention of the DDLS paper for WGANs with ``T`` chosen by the user.

``mala=True`` adds the Metropolis correction (exact for the target at any step size);
with a uniform prior, unadjusted chains are reflected at the box's walls.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import option, register
from .gradient import GradientSampler, Plan, latent_potential, prior_bounds, prior_start

__all__ = ["DDLSSampler"]


@register("ddls")
@dataclass(frozen=True)
class DDLSSampler(GradientSampler):
    summary = "DDLS: Langevin in latent space on log p0(z) + d(G(z)), d the discriminator logit (log r)"

    step_size: float = option(1e-3, "step size eps: z <- z + (eps/2) grad log pi + sqrt(eps) xi")
    steps: int = option(100, "Langevin steps per chain")

    def _plan(self, target, n, rng, real) -> Plan:
        pot = latent_potential(target, prior=True)
        return Plan(lambda _v0: pot, prior_start(target, rng), "latent", bounds=prior_bounds(target))
