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
(:func:`finetune_critic_cd`: hinge loss, negatives from ``finetune_steps`` Langevin steps
started at generator outputs, the same step size, noise and clipping as the sampler), using
held-out real samples passed as ``real=``. The user's network is not changed. The passes
spent on fine-tuning are counted in ``info`` (amortised over the ``n`` samples). The
fine-tuning is part of the method, so it lives here; ``refine.train.wgan`` re-exports it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError, NonFiniteError, ShapeError
from ..generator import LatentGenerator
from ..ratio.discriminator import DiscriminatorRatio
from ..target import LatentTarget
from ._ops import positive
from .base import option, register
from .gradient import (
    GradientSampler,
    Plan,
    data_potential,
    generated_start,
    latent_potential,
    output_bounds,
    prior_bounds,
    prior_start,
    ratio_only,
)
from .langevin import LangevinConfig, run

__all__ = ["DCDSampler", "finetune_critic_cd"]


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
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=tuple(betas))
    history: list[dict] = []
    g = d = db = 0
    pot = data_potential(ratio_only((generator, ratio)))
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
