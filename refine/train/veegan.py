"""VEEGAN (Srivastava et al. 2017): a reconstructor network and a discriminator on (z, x) pairs.

Networks: the generator ``G: z -> x``, a reconstructor ``F: x -> z`` and a joint
discriminator ``D(z, x)`` (an MLP on ``[z, x]``). Per batch (the paper's Algorithm 1):

- ``D`` learns to tell generator pairs ``(z, G(z))``, ``z ~ p0`` (label 1) from data pairs
  ``(F(x), x)`` (label 0), so its logit estimates ``log q(z, x) / p(z, x)``;
- ``G`` minimises ``E[D(z, G(z))] + rec_weight * E||z - F(G(z))||^2`` (the density-ratio
  estimate of the KL term plus the noise autoencoding loss);
- ``F`` minimises the same noise autoencoding loss.

``eps_dim`` follows the reference code's 2-D setup: the last ``eps_dim`` latent coordinates
are extra noise fed to ``G`` that ``F`` does not reconstruct and ``D`` does not see (its
``z`` is the first ``z_dim - eps_dim`` coordinates). ``rec_weight=0.5`` makes the
autoencoding term the negative log-likelihood of a unit-variance Gaussian reconstructor
(up to a constant), as in that code; the default 1 is the paper's squared l2 distance.

``rec_std`` > 0 makes the reconstructor stochastic, ``p(z | x) = N(F(x), rec_std^2 I)``, as in
the paper's Algorithm 1 (``z ~ p_theta(z | x)`` for the data pairs) and its 2-D code (unit
variance): ``D``'s data pairs are ``(F(x) + rec_std * eps, x)`` and the autoencoding term is
the Gaussian negative log-likelihood ``||z - F(G(z))||^2 / (2 rec_std^2)`` (times
``rec_weight``). With the default 0 the reconstructor is deterministic (``(F(x), x)``, the
squared distance). A deterministic ``F`` puts the data pairs' codes on a ``x_dim``-dimensional
surface, which a joint discriminator separates from the prior's codes trivially once
``z_dim > x_dim``.

There is no discriminator on ``x`` alone, so a VEEGAN checkpoint holds none: ``D`` and ``F``
are stored under ``extra["networks"]`` (``joint_discriminator``, ``reconstructor``).
``refine sample --method none`` draws from the generator; refining needs a ratio fitted to
the trained generator first: ``refine fit-ratio --ckpt veegan.pt`` trains a fresh
discriminator on ``x`` and ``refine sample --ratio`` uses it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nets import arch_config
from .loop import adam
from .registry import register_method
from .unrolled import apply_grads

__all__ = ["VEEGAN"]


@register_method("veegan")
class VEEGAN:
    """VEEGAN: a reconstructor network, a discriminator on (z, x) pairs and a noise autoencoding loss.

    Options: ``lr``, ``betas``, ``lr_d`` (joint discriminator), ``rec_weight`` (1), ``d_steps`` (1),
    ``eps_dim`` (0: latent coordinates that are not reconstructed), ``rec_std`` (0: a deterministic
    reconstructor; > 0: Gaussian, see the module notes).
    """

    @classmethod
    def networks(cls, *, x_dim: int, z_dim: int, hidden: int, depth: int, options: dict) -> dict:
        eps = int(options.get("eps_dim", 0) or 0)
        if not 0 <= eps < z_dim:
            raise ConfigError(
                f"eps_dim (latent coordinates not reconstructed) must be in [0, {z_dim - 1}] for latent size {z_dim}, got {eps}"
            )
        return {
            "joint_discriminator": arch_config(
                "mlp", in_dim=x_dim + z_dim - eps, out_dim=1, hidden=hidden, depth=depth
            ),
            "reconstructor": arch_config("mlp", in_dim=x_dim, out_dim=z_dim - eps, hidden=hidden, depth=depth),
        }

    def __init__(
        self,
        generator,
        discriminator=None,
        *,
        joint_discriminator: nn.Module,
        reconstructor: nn.Module,
        lr: float = 1e-3,
        betas=(0.5, 0.999),
        lr_d: float | None = None,
        rec_weight: float = 1.0,
        d_steps: int = 1,
        eps_dim: int = 0,
        rec_std: float = 0.0,
    ):
        if discriminator is not None:
            raise ConfigError("veegan trains a discriminator on (z, x) pairs, not on x; pass discriminator=None")
        if lr <= 0 or d_steps < 1 or rec_weight < 0 or rec_std < 0:
            raise ConfigError(
                f"need lr > 0, d_steps >= 1, rec_weight >= 0 and rec_std >= 0, got {lr}, {d_steps}, {rec_weight} and {rec_std}"
            )
        z_dim = math.prod(generator.latent_shape)
        if not 0 <= int(eps_dim) < z_dim:
            raise ConfigError(
                f"eps_dim (latent coordinates not reconstructed) must be in [0, {z_dim - 1}] for latent size {z_dim}, got {eps_dim}"
            )
        self.G, self.D, self.R = generator, joint_discriminator, reconstructor
        self.n_rec = z_dim - int(eps_dim)
        self.rec_std = float(rec_std)
        self.rec_weight, self.d_steps = float(rec_weight), int(d_steps)
        self.opt_g = adam(generator.net.parameters(), lr, betas)
        self.opt_r = adam(reconstructor.parameters(), lr, betas)
        self.opt_d = adam(joint_discriminator.parameters(), lr_d or lr, betas)

    def code(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstructed part of a latent batch, flat: its first ``z_dim - eps_dim`` coordinates."""
        return z.flatten(1)[:, : self.n_rec]

    def joint_logit(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``D`` on ``(code, x)``; ``z`` is a latent batch or already a code (``reconstruct``'s output)."""
        return self.D(torch.cat([self.code(z), x.flatten(1)], 1)).view(-1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``F(x)``: a flat code of ``z_dim - eps_dim`` coordinates."""
        return self.R(x).view(len(x), self.n_rec)

    def sample_code(self, x: torch.Tensor, *, rng=None) -> torch.Tensor:
        """``z ~ p(z | x)``: ``F(x)``, plus ``rec_std`` times standard normal noise for a stochastic reconstructor."""
        zr = self.reconstruct(x)
        if self.rec_std > 0:
            zr = zr + self.rec_std * torch.randn(zr.shape, generator=rng, device=zr.device, dtype=zr.dtype)
        return zr

    def step(self, real: torch.Tensor, *, rng=None) -> dict:
        b = len(real)
        for _ in range(self.d_steps):
            z = self.G.sample_latent(b, rng=rng)
            with torch.no_grad():
                xg = self.G(z)
                zr = self.sample_code(real, rng=rng)
            loss_d = F.softplus(-self.joint_logit(z, xg)).mean() + F.softplus(self.joint_logit(zr, real)).mean()
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        z = self.G.sample_latent(b, rng=rng)
        xg = self.G(z)
        kl = self.joint_logit(z, xg).mean()
        rec = (self.code(z) - self.reconstruct(xg)).pow(2).sum(1).mean()
        if self.rec_std > 0:  # Gaussian negative log-likelihood, up to a constant
            rec = rec / (2 * self.rec_std**2)
        gparams, rparams = list(self.G.net.parameters()), list(self.R.parameters())
        grads = torch.autograd.grad(kl + self.rec_weight * rec, gparams + rparams, allow_unused=True)
        # F only sees the autoencoding term: D(z, G(z)) does not depend on it.
        apply_grads(gparams + rparams, grads)
        self.opt_g.step()
        self.opt_r.step()
        return {"loss_d": loss_d.item(), "loss_g": (kl + self.rec_weight * rec).item(), "rec": rec.item()}

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.G.net, "joint_discriminator": self.D, "reconstructor": self.R}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "reconstructor": self.opt_r, "joint_discriminator": self.opt_d}
