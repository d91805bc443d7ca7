"""WGAN-GP (Gulrajani et al. 2017) and critic fine-tuning by contrastive divergence (DCD).

:class:`WGANGP` is registered as training method ``wgan-gp``. Its defaults are the toy
settings of the WGAN-GP paper's 2-D experiments: gradient-penalty weight 0.1, 5 critic
updates per generator update, Adam with learning rate 1e-4 and betas (0.5, 0.9). As in
that code, every critic update sees a fresh batch of real data: one call of
:meth:`WGANGP.step` (one batch of the training loop) is one critic update, and every
``d_steps``-th call also updates the generator. The critic's raw output is saved as a
``"critic"`` discriminator.

:func:`finetune_critic_cd` is the optional critic fine-tuning of Discriminator
Contrastive Divergence (Song et al. 2020): negatives are Langevin chains in data space
on ``exp(log r(x))`` started at generator outputs, and the critic is updated with the
hinge loss ``relu(1 - D(x_real)) + relu(1 + D(x_neg))``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError, NonFiniteError, ShapeError
from ..generator import LatentGenerator
from ..samplers._ops import positive
from ..samplers.langevin import LangevinConfig, data_potential, output_bounds, run
from .gan_gp import penalty_points
from .losses import d_loss_wgan, g_loss_wgan, gradient_penalty
from .registry import register_method

__all__ = ["WGANGP", "WGAN_GP_TOY", "finetune_critic_cd"]

#: The WGAN-GP paper's 2-D toy settings.
WGAN_GP_TOY = {"lr": 1e-4, "betas": (0.5, 0.9), "d_steps": 5, "gp_weight": 0.1}


def _adam(params, lr, betas):
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas))


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
        self.opt_g = _adam(generator.net.parameters(), lr, betas)
        self.opt_d = _adam(discriminator.parameters(), lr_d or lr, betas)
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


def finetune_critic_cd(
    generator: LatentGenerator,
    ratio,
    real: torch.Tensor,
    *,
    iterations: int = 500,
    batch_size: int = 256,
    lr: float = 1e-4,
    betas=(0.5, 0.9),
    langevin: LangevinConfig | None = None,
    rng: torch.Generator | None = None,
    progress: bool = False,
) -> dict:
    """Fine-tune ``ratio.net`` in place by contrastive divergence with the hinge loss (DCD).

    Each iteration draws ``batch_size`` real points (with replacement) and as many
    generator outputs, runs the Langevin chain ``langevin`` (default: 10 steps of size
    0.01 with unit noise) on ``exp(ratio.log_ratio(x))`` from those outputs in data
    space, and takes one Adam step on ``relu(1 - s(x_real)) + relu(1 + s(x_neg))`` where
    ``s`` is the network's raw score (``ratio.logit``). The generator is not touched.

    Returns ``{"history": [...], "g_evals", "d_evals", "d_backward"}`` (total passes).
    The network is left in the mode it came in, with ``requires_grad`` as it was.
    """
    net = getattr(ratio, "net", None)
    if not isinstance(net, nn.Module) or not hasattr(ratio, "logit"):
        raise ConfigError(
            f"critic fine-tuning needs a DiscriminatorRatio around an nn.Module, got {type(ratio).__name__}"
        )
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(f"fine-tuning iterations must be an integer >= 1, got {iterations!r}")
    positive("batch_size", batch_size)
    positive("lr", lr)
    if not isinstance(real, torch.Tensor) or real.dim() < 2 or len(real) < 1:
        raise ShapeError(f"critic fine-tuning needs a tensor of real samples (N, ...), got {type(real).__name__}")
    cfg = langevin or LangevinConfig(step_size=0.01, steps=10)
    if cfg.mala:
        raise ConfigError("critic fine-tuning runs unadjusted chains; set mala=False")
    if cfg.bounds is None and output_bounds(generator) is not None:
        cfg = dataclasses.replace(cfg, bounds=output_bounds(generator))
    device = next(net.parameters()).device
    real = real.to(device)
    was_training = net.training
    flags = [p.requires_grad for p in net.parameters()]
    opt = _adam(net.parameters(), lr, betas)
    history: list[dict] = []
    g = d = db = 0
    pot = data_potential(_RatioOnly(ratio))
    bar = tqdm(range(iterations), desc="dcd fine-tune", disable=not progress, leave=False)
    try:
        net.requires_grad_(True)
        for it in bar:
            dev = rng.device if rng is not None else "cpu"
            idx = torch.randint(len(real), (batch_size,), generator=rng, device=dev).to(device)
            x_real = real[idx]
            with torch.no_grad():
                x0 = generator(generator.sample_latent(batch_size, rng=rng))
            net.eval()
            state, stats = run(pot, x0, cfg, rng=rng)
            net.train()
            x_neg = state.position.detach()
            s_real, s_neg = ratio.logit(x_real), ratio.logit(x_neg)
            loss = torch.relu(1 - s_real).mean() + torch.relu(1 + s_neg).mean()
            if not math.isfinite(loss.item()):
                raise NonFiniteError(
                    f"critic fine-tuning diverged at iteration {it + 1} (loss {loss.item()}); lower lr or the Langevin step size"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            g += batch_size
            d += batch_size * (stats["evaluations"] + 2)
            db += batch_size * (stats["evaluations"] + 2)
            history.append(
                {
                    "iteration": it + 1,
                    "loss": loss.item(),
                    "score_real": s_real.mean().item(),
                    "score_neg": s_neg.mean().item(),
                }
            )
            if (it + 1) % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    finally:
        bar.close()
        opt.zero_grad(set_to_none=True)
        net.train(was_training)
        for p, f in zip(net.parameters(), flags):
            p.requires_grad_(f)
    return {"history": history, "g_evals": g, "d_evals": d, "d_backward": db}


class _RatioOnly:
    """Adapter so the data-space potential can read ``log_ratio`` from a bare ratio."""

    def __init__(self, ratio) -> None:
        self.ratio = ratio

    def log_ratio(self, x):
        from ..ratio.base import check_log_ratio

        return check_log_ratio(self.ratio.log_ratio(x), x.shape[0], "ratio")
