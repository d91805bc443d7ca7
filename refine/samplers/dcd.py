"""Discriminator Contrastive Divergence (DCD; Song et al. 2020).

DCD reads a critic ``D`` as an energy, ``E(x) = -D(x)``, and refines generator
samples with Langevin dynamics on ``exp(-E)``:

- ``space="data"`` (the paper's main sampler): chains start at ``x = G(z)`` and move in
  data space, ``x <- x + (eps/2) clip(grad_x D(x)) + sqrt(eps) xi``; ``clip`` bounds each
  element of the drift gradient where the critic is steep (off by default: the right bound
  depends on the critic's scale). The target is ``exp(D(x))`` itself: no generator density
  enters, so it is the data distribution only where ``exp(D)`` is an energy for the data.
  That is what the critic fine-tuning below is for; a plain GAN logit gives
  ``exp(D) = p_data / p_G``, which is not (see the benchmark).
- ``space="latent"``: chains move ``z`` on ``log p0(z) + D(G(z))`` (as DDLS, with clipping).

How the ratio is read: ``D(x) = target.log_ratio(x)``, i.e. ``critic / T`` for a WGAN
critic read as ``DiscriminatorRatio(net, "critic", temperature=T)``, or the logit of a
standard discriminator.

``finetune > 0`` first fine-tunes a private copy of the critic by contrastive divergence
(:func:`refine.train.wgan.finetune_critic_cd`: hinge loss, negatives from ``finetune_steps``
Langevin steps started at generator outputs, the same step size, noise and clipping as the
sampler), using held-out real samples passed as ``real=``. The user's network is not changed.
The passes spent on fine-tuning are counted in ``info`` (amortised over the ``n`` samples).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from ..errors import ConfigError
from ._ops import positive
from .base import option, register
from .langevin import (
    GradientSampler,
    Plan,
    data_potential,
    generated_start,
    latent_potential,
    output_bounds,
    prior_bounds,
    prior_start,
)

__all__ = ["DCDSampler"]


@register("dcd")
@dataclass(frozen=True)
class DCDSampler(GradientSampler):
    summary = "DCD: Langevin on the critic D in data space or latent space (optional per-element gradient clipping); optional contrastive-divergence critic fine-tuning"

    step_size: float = option(3e-4, "step size eps: x <- x + (eps/2) clip(grad D) + sqrt(eps) xi")
    steps: int = option(100, "Langevin steps per chain")
    clip: Optional[float] = option(
        None,
        "clip each element of the drift gradient to [-clip, clip] (none: off; the bound depends on the critic's scale)",
    )
    space: Literal["data", "latent"] = option(
        "data", "where the chains move: data space (x) or latent space (z, with the prior term)"
    )
    finetune: int = option(
        0, "critic fine-tuning iterations by contrastive divergence before sampling (needs real=); 0: off"
    )
    finetune_steps: int = option(10, "Langevin steps of the negative chains during fine-tuning")
    finetune_lr: float = option(1e-4, "Adam learning rate of the critic fine-tuning")
    finetune_batch: int = option(256, "real and negative samples per fine-tuning iteration")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.finetune, bool) or int(self.finetune) < 0:
            raise ConfigError(f"finetune (iterations) must be >= 0, got {self.finetune}")
        if int(self.finetune_steps) < 1:
            raise ConfigError(f"finetune_steps must be >= 1, got {self.finetune_steps}")
        positive("finetune_lr", self.finetune_lr)
        positive("finetune_batch", self.finetune_batch)

    def planned_evals(self, n: int) -> float:
        # each fine-tuning iteration runs negative chains and a critic step on a batch
        tune = float(self.finetune) * float(self.finetune_batch) * (3 * int(self.finetune_steps) + 4)
        return super().planned_evals(n) + tune

    def real_rows(self, n: int) -> int:
        return max(int(n), int(self.finetune_batch)) if self.finetune else 0  # the critic fine-tunes on them

    @property
    def moves_in_data_space(self) -> bool:
        return self.space == "data"

    def rows_in_memory(self) -> int:
        return max(super().rows_in_memory(), 2 * int(self.finetune_batch) if self.finetune else 0)

    def _finetuned(self, target, real, rng):
        from ..ratio.discriminator import DiscriminatorRatio
        from ..target import LatentTarget
        from ..train.wgan import finetune_critic_cd

        if real is None:
            raise ConfigError(
                "dcd with finetune > 0 needs held-out real samples (pass real=... to refine.sample / DCDSampler.sample)"
            )
        ratio = target.ratio
        if not isinstance(ratio, DiscriminatorRatio) or not isinstance(ratio.net, torch.nn.Module):
            raise ConfigError(f"dcd fine-tuning needs a DiscriminatorRatio around an nn.Module critic, got {ratio!r}")
        tuned = DiscriminatorRatio(
            copy.deepcopy(ratio.net), ratio.output, temperature=ratio.temperature, calibration=ratio.calibration
        )
        cfg = dataclasses.replace(self._config(None), steps=int(self.finetune_steps), mala=False)
        report = finetune_critic_cd(
            target.generator,
            tuned,
            real,
            iterations=int(self.finetune),
            batch_size=int(self.finetune_batch),
            lr=float(self.finetune_lr),
            langevin=cfg,
            rng=rng,
        )
        tuned.net.eval().requires_grad_(False)
        return LatentTarget(target.generator, tuned, prior_term=target.prior_term), report

    def _plan(self, target, n, rng, real) -> Plan:
        report = None
        if int(self.finetune) > 0:
            target, report = self._finetuned(target, real, rng)
        extra = {}
        info = {}
        if report is not None:
            extra = {
                "extra_g_total": report["g_evals"],
                "extra_d_total": report["d_evals"],
                "extra_d_backward_total": report["d_backward"],
            }
            hist = report["history"]
            info = {
                "finetune": {
                    "iterations": len(hist),
                    "loss_first": hist[0]["loss"],
                    "loss_last": hist[-1]["loss"],
                    "score_real_last": hist[-1]["score_real"],
                    "score_neg_last": hist[-1]["score_neg"],
                }
            }
        if self.space == "data":
            pot = data_potential(target)
            start, _ = generated_start(target, n, rng)
            return Plan(lambda _v0: pot, start, "data", bounds=output_bounds(target.generator), info=info, **extra)
        pot = latent_potential(target, prior=True)
        return Plan(
            lambda _v0: pot, prior_start(target, rng), "latent", bounds=prior_bounds(target), info=info, **extra
        )
