"""Non-saturating GAN with a gradient penalty on the discriminator (Fedus et al. 2018).

"Many Paths to Equilibrium" adds to the non-saturating GAN the penalty
``gp_weight * E[(||grad_x D(x_hat)|| - 1)^2]`` at one of two kinds of points:

- ``penalty="interpolates"`` (GAN-GP): ``x_hat = a x_real + (1 - a) x_fake``, ``a ~ U[0, 1]``
  per sample, as in WGAN-GP;
- ``penalty="dragan"`` (DRAGAN-NS, Kodali et al. 2017): points near the data,
  ``x_hat = a x + (1 - a) (x + c * std(x) * u)``, ``u ~ U[0, 1]`` elementwise, ``a ~ U[0, 1]``
  per sample, ``c = dragan_scale`` (0.5 in DRAGAN), ``std`` over the real batch.

The discriminator still outputs a logit, so it is a density-ratio estimate like the plain GAN's.
WGAN-GP itself is the ``wgan-gp`` method (:mod:`refine.train.wgan`).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .gan import GAN
from .losses import d_loss_ns, gradient_penalty
from .registry import register_method

__all__ = ["GANGP", "PENALTIES", "penalty_points"]

PENALTIES = ("interpolates", "dragan")


def _uniform(shape, like: torch.Tensor, rng) -> torch.Tensor:
    dev = rng.device if rng is not None else "cpu"
    return torch.rand(shape, generator=rng, device=dev).to(device=like.device, dtype=like.dtype)


def penalty_points(
    kind: str, real: torch.Tensor, fake: torch.Tensor, *, rng=None, dragan_scale: float = 0.5
) -> torch.Tensor:
    """The points where the penalty is taken (see the module docs)."""
    a = _uniform((len(real),) + (1,) * (real.dim() - 1), real, rng)
    if kind == "interpolates":
        return a * real + (1 - a) * fake
    if kind == "dragan":
        perturbed = real + dragan_scale * real.std() * _uniform(real.shape, real, rng)
        return a * real + (1 - a) * perturbed
    raise ConfigError(f"unknown penalty {kind!r}; valid: {', '.join(PENALTIES)}")


@register_method("gan-gp")
class GANGP(GAN):
    """Non-saturating GAN + gradient penalty at real/fake interpolates or near the data (DRAGAN).

    Options: ``penalty`` (interpolates | dragan), ``gp_weight`` (10), ``dragan_scale`` (0.5).
    """

    def __init__(
        self,
        generator,
        discriminator,
        *,
        lr: float = 1e-3,
        betas=(0.5, 0.999),
        d_steps: int = 1,
        lr_d: float | None = None,
        penalty: str = "interpolates",
        gp_weight: float = 10.0,
        dragan_scale: float = 0.5,
    ):
        super().__init__(generator, discriminator, lr=lr, betas=betas, d_steps=d_steps, lr_d=lr_d)
        if penalty not in PENALTIES:
            raise ConfigError(f"unknown penalty {penalty!r}; valid: {', '.join(PENALTIES)}")
        if gp_weight < 0 or dragan_scale <= 0:
            raise ConfigError(f"need gp_weight >= 0 and dragan_scale > 0, got {gp_weight} and {dragan_scale}")
        self.penalty, self.gp_weight, self.dragan_scale = penalty, float(gp_weight), float(dragan_scale)
        self._rng = None

    def d_loss(self, real, fake):
        pts = penalty_points(self.penalty, real, fake, rng=self._rng, dragan_scale=self.dragan_scale)
        gp = gradient_penalty(self.D, pts)
        return d_loss_ns(self.D(real), self.D(fake)) + self.gp_weight * gp, {"gp": gp.item()}

    def step(self, real: torch.Tensor, *, rng=None) -> dict:
        self._rng = rng
        try:
            return super().step(real, rng=rng)
        finally:
            self._rng = None
