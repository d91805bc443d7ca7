"""Discriminator Gradient flow (DGflow; Ansari et al. 2021), in latent space.

DGflow simulates the gradient flow of an entropy-regularised f-divergence between the
generated and the data distribution. With ``d = log r`` (the discriminator's logit) and
the density ratio ``rho = p_G / p_data = exp(-d)``, the flow's Euler-Maruyama step is

    z <- z - eta grad_z f'(rho(G(z))) + sqrt(2 eta gamma) xi
       = z + eta s(d) grad_z d + sqrt(2 eta gamma) xi,

where the weight ``s(d)`` depends on the divergence:

- ``KL``:   s = 1                     (the flow is Langevin on d alone)
- ``logD``: s = 1 / (1 + exp(d)) = sigmoid(-d)
- ``JS``:   s = 1 / (1 + exp(-d)) = sigmoid(d)

Each drift is the gradient of a potential ``F(d)`` with ``F' = s`` (``d``, ``log sigmoid(d)``,
``softplus(d)``), so DGflow is the shared Langevin engine on ``F(log r(G(z)))``. In the
engine's terms ``step_size = 2 eta`` and ``noise_scale = sqrt(gamma)``. The paper uses
eta = 0.1, gamma = 0.01 and 25 steps on 128-d image latents; on the 2-D benchmark GAN
that step loses modes, so the defaults here are eta = 5e-4 (``step_size=1e-3``), gamma = 0.01,
50 steps (see benchmarks/toy2d_gradient.py). The flow's stationary law is
``exp(F(d) / gamma)``, far sharper than the data: DGflow is meant to run a few steps, not
to converge. The paper's latent flow has no prior term; ``prior=True`` adds ``log p0(z)``.

How the ratio is read: ``d = target.log_ratio(G(z))`` (the logit, or ``critic / T`` for a
WGAN critic read as ``DiscriminatorRatio(net, "critic", temperature=T)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .base import option, register
from .gradient import GradientSampler, Plan, Transform, latent_potential, prior_bounds, prior_start

__all__ = ["DGflowSampler", "DIVERGENCES"]

#: f-divergence weights of DGflow as potentials of the log ratio ``d``: ``(F, F' = s)``.
#: KL: s = 1 (F = d); logD: s = sigmoid(-d) (F = log sigmoid(d) = log D); JS: s = sigmoid(d) (F = softplus(d) = log(1 + r)).
DIVERGENCES: dict[str, Transform] = {
    "KL": (lambda d: d, lambda d: torch.ones_like(d)),
    "logD": (torch.nn.functional.logsigmoid, lambda d: torch.sigmoid(-d)),
    "JS": (torch.nn.functional.softplus, torch.sigmoid),
}


@register("dgflow")
@dataclass(frozen=True)
class DGflowSampler(GradientSampler):
    summary = "DGflow: f-divergence gradient flow s(d) grad d in latent space (KL, logD, JS), with noise"

    step_size: float = option(1e-3, "step size eps = 2 eta (the paper uses eta = 0.1 for 128-d image latents)")
    steps: int = option(50, "flow steps per sample (the paper: 25)")
    noise_scale: float = option(0.1, "noise sigma = noise_scale * sqrt(eps), i.e. sqrt(gamma) (gamma = 0.01)")
    divergence: Literal["KL", "logD", "JS"] = option("KL", "f-divergence whose flow is simulated: KL, logD or JS")
    prior: bool = option(False, "add the prior term log p0(z) to the flow's potential")

    def _plan(self, target, n, rng, real) -> Plan:
        pot = latent_potential(target, prior=bool(self.prior), transform=DIVERGENCES[self.divergence])
        return Plan(
            lambda _v0: pot,
            prior_start(target, rng),
            "latent",
            bounds=prior_bounds(target),
            info={"divergence": self.divergence},
        )
