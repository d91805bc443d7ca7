"""alpha-GAN (Rosca et al. 2017): an auto-encoder GAN with a code discriminator.

Networks: generator ``G: z -> x``, encoder ``E: x -> z``, data discriminator ``D`` on ``x``
and code discriminator ``C`` on ``z``. Per batch, with ``z ~ p0``, ``z_hat = E(x)``,
``x_rec = G(z_hat)``, ``x_gen = G(z)``:

- ``D``: real ``x`` -> 1, ``x_rec`` and ``x_gen`` -> 0 (binary cross-entropy on logits);
- ``C``: ``z`` -> 1, ``z_hat`` -> 0;
- ``E``: ``rec_weight * ||x - x_rec||_1 + adv(C(z_hat))``;
- ``G``: ``rec_weight * ||x - x_rec||_1 + adv(D(x_rec)) + adv(D(x_gen))``.

``adv(logit)`` is ``-logit`` (``adv_loss="ratio"``, the paper's ``-log D/(1-D)``) or the
non-saturating ``softplus(-logit)`` (``adv_loss="ns"``, the default; steadier on 2-D data).
The data discriminator is saved as the checkpoint's discriminator (a ratio for ``refine
sample``); ``E`` and ``C`` go under ``extra["networks"]`` (``encoder``, ``code_discriminator``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nets import arch_config
from .loop import adam
from .losses import d_loss_ns
from .registry import register_method
from .unrolled import apply_grads

__all__ = ["AlphaGAN", "ADV_LOSSES"]

ADV_LOSSES = ("ns", "ratio")


@register_method("alphagan")
class AlphaGAN:
    """alpha-GAN: encoder, code discriminator, L1 reconstruction and a data discriminator.

    Options: ``lr``, ``betas``, ``lr_d`` (both discriminators), ``rec_weight`` (1), ``adv_loss`` (ns | ratio).
    """

    @classmethod
    def networks(cls, *, x_dim: int, z_dim: int, hidden: int, depth: int, options: dict) -> dict:
        return {
            "discriminator": arch_config("mlp", in_dim=x_dim, out_dim=1, hidden=hidden, depth=depth),
            "encoder": arch_config("mlp", in_dim=x_dim, out_dim=z_dim, hidden=hidden, depth=depth),
            "code_discriminator": arch_config("mlp", in_dim=z_dim, out_dim=1, hidden=hidden, depth=depth),
        }

    def __init__(
        self,
        generator,
        discriminator,
        *,
        encoder: nn.Module,
        code_discriminator: nn.Module,
        lr: float = 1e-3,
        betas=(0.5, 0.999),
        lr_d: float | None = None,
        rec_weight: float = 1.0,
        adv_loss: str = "ns",
    ):
        if discriminator is None:
            raise ConfigError("alphagan needs a data discriminator on x")
        if lr <= 0 or rec_weight < 0:
            raise ConfigError(f"need lr > 0 and rec_weight >= 0, got {lr} and {rec_weight}")
        if adv_loss not in ADV_LOSSES:
            raise ConfigError(f"unknown adv_loss {adv_loss!r}; valid: {', '.join(ADV_LOSSES)}")
        self.G, self.D, self.E, self.C = generator, discriminator, encoder, code_discriminator
        self.rec_weight, self.adv_loss = float(rec_weight), adv_loss
        self.opt_g = adam(generator.net.parameters(), lr, betas)
        self.opt_e = adam(encoder.parameters(), lr, betas)
        self.opt_d = adam(discriminator.parameters(), lr_d or lr, betas)
        self.opt_c = adam(code_discriminator.parameters(), lr_d or lr, betas)

    def _adv(self, logit: torch.Tensor) -> torch.Tensor:
        return (-logit).mean() if self.adv_loss == "ratio" else F.softplus(-logit).mean()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.E(x).view(len(x), *self.G.latent_shape)

    def step(self, real: torch.Tensor, *, rng=None) -> dict:
        b = len(real)
        z = self.G.sample_latent(b, rng=rng)
        with torch.no_grad():
            z_hat = self.encode(real)
            x_rec, x_gen = self.G(z_hat), self.G(z)
        lr_ = self.D(real)
        loss_d = F.softplus(-lr_).mean() + F.softplus(self.D(x_rec)).mean() + F.softplus(self.D(x_gen)).mean()
        loss_c = d_loss_ns(self.C(z.flatten(1)), self.C(z_hat.flatten(1)))
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_c.zero_grad(set_to_none=True)
        (loss_d + loss_c).backward()
        self.opt_d.step()
        self.opt_c.step()

        z = self.G.sample_latent(b, rng=rng)
        z_hat = self.encode(real)
        x_rec, x_gen = self.G(z_hat), self.G(z)
        rec = (real - x_rec).abs().flatten(1).sum(1).mean()
        loss_e = self.rec_weight * rec + self._adv(self.C(z_hat.flatten(1)))
        loss_g = self.rec_weight * rec + self._adv(self.D(x_rec)) + self._adv(self.D(x_gen))
        eparams, gparams = list(self.E.parameters()), list(self.G.net.parameters())
        apply_grads(eparams, torch.autograd.grad(loss_e, eparams, retain_graph=True, allow_unused=True))
        apply_grads(gparams, torch.autograd.grad(loss_g, gparams, allow_unused=True))
        self.opt_e.step()
        self.opt_g.step()
        return {
            "loss_d": loss_d.item(),
            "loss_c": loss_c.item(),
            "loss_g": loss_g.item(),
            "loss_e": loss_e.item(),
            "rec": rec.item(),
        }

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.G.net, "discriminator": self.D, "encoder": self.E, "code_discriminator": self.C}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {
            "generator": self.opt_g,
            "encoder": self.opt_e,
            "discriminator": self.opt_d,
            "code_discriminator": self.opt_c,
        }
