"""WGAN-GP (Gulrajani et al. 2017) and critic fine-tuning by contrastive divergence (DCD).

:class:`WGANGP` is registered as training method ``wgan-gp``. Its defaults are the toy
settings of the WGAN-GP paper's 2-D experiments: gradient-penalty weight 0.1, 5 critic
updates per generator update, Adam with learning rate 1e-4 and betas (0.5, 0.9). As in
that code, every critic update sees a fresh batch of real data: one call of
:meth:`WGANGP.step` (one batch of the training loop) is one critic update, and every
``d_steps``-th call also updates the generator. The critic's raw output is saved as a
``"critic"`` discriminator.

:func:`finetune_critic_cd`, the optional critic fine-tuning of Discriminator Contrastive
Divergence (Song et al. 2020), is part of that sampler and lives in
:mod:`refine.samplers.dcd`; it is re-exported here for the callers that found it here.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ..generator import LatentGenerator
from ..samplers._ops import positive
from ..samplers.dcd import finetune_critic_cd
from .gan_gp import penalty_points
from .loop import adam
from .losses import d_loss_wgan, g_loss_wgan, gradient_penalty
from .registry import register_method

__all__ = ["WGANGP", "WGAN_GP_TOY", "finetune_critic_cd"]

#: The WGAN-GP paper's 2-D toy settings.
WGAN_GP_TOY = {"lr": 1e-4, "betas": (0.5, 0.9), "d_steps": 5, "gp_weight": 0.1}


@register_method("wgan-gp")
class WGANGP:
    """WGAN-GP: critic updates with a gradient penalty at real/fake interpolates, a generator update every d_steps."""

    #: how ``refine train`` saves the discriminator: a WGAN critic, not a logit.
    discriminator_output = "critic"
    #: optimiser defaults used by the 2-D training recipe for this method.
    toy_defaults = {"lr": WGAN_GP_TOY["lr"], "betas": WGAN_GP_TOY["betas"]}

    def __init__(
        self,
        generator: LatentGenerator,
        discriminator: nn.Module,
        *,
        lr: float = WGAN_GP_TOY["lr"],
        betas=WGAN_GP_TOY["betas"],
        d_steps: int = WGAN_GP_TOY["d_steps"],
        gp_weight: float = WGAN_GP_TOY["gp_weight"],
        lr_d: float | None = None,
    ):
        positive("lr", lr)
        positive("gp_weight", gp_weight, allow_zero=True)
        if lr_d is not None:
            positive("lr_d", lr_d)
        if isinstance(d_steps, bool) or not isinstance(d_steps, int) or d_steps < 1:
            raise ConfigError(f"d_steps (critic updates per generator update) must be an integer >= 1, got {d_steps!r}")
        if len(tuple(betas)) != 2:
            raise ConfigError(f"betas must be two numbers, got {betas!r}")
        self.G, self.D = generator, discriminator
        self.d_steps, self.gp_weight = d_steps, float(gp_weight)
        self.opt_g = adam(generator.net.parameters(), lr, betas)
        self.opt_d = adam(discriminator.parameters(), lr_d or lr, betas)
        self._calls = 0
        self._last_g: dict = {}

    def critic_step(self, real: torch.Tensor, *, rng=None) -> dict:
        b = len(real)
        with torch.no_grad():
            fake = self.G(self.G.sample_latent(b, rng=rng))
        if fake.shape[1:] != real.shape[1:]:
            raise ShapeError(f"generator samples have shape {tuple(fake.shape[1:])}, real data {tuple(real.shape[1:])}")
        d_real, d_fake = self.D(real), self.D(fake)
        wdist = d_real.mean() - d_fake.mean()
        gp = gradient_penalty(self.D, penalty_points("interpolates", real, fake, rng=rng))
        loss = d_loss_wgan(d_real, d_fake) + self.gp_weight * gp
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return {"loss_d": loss.item(), "wasserstein": wdist.item(), "gp": gp.item()}

    def generator_step(self, b: int, *, rng=None) -> dict:
        fake = self.G(self.G.sample_latent(b, rng=rng))
        loss = g_loss_wgan(self.D(fake))
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        return {"loss_g": loss.item()}

    def step(self, real: torch.Tensor, *, rng=None) -> dict:
        """One critic update on ``real``; every ``d_steps``-th call, one generator update too."""
        logs = self.critic_step(real, rng=rng)
        self._calls += 1
        if self._calls % self.d_steps == 0:
            self._last_g = self.generator_step(len(real), rng=rng)
        return {**logs, **self._last_g}

    def extra_state(self) -> dict:
        """Counters a resumed run needs (where in the critic/generator cycle it stopped)."""
        return {"calls": self._calls, "last_g": dict(self._last_g)}

    def load_extra_state(self, state: dict) -> None:
        self._calls = int(state.get("calls", 0))
        self._last_g = dict(state.get("last_g") or {})

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.G.net, "discriminator": self.D}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}
