"""GAN losses on discriminator logits (pure functions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["d_loss_ns", "g_loss_ns", "d_loss_wgan", "g_loss_wgan", "gradient_penalty"]


def d_loss_ns(real_logit: torch.Tensor, fake_logit: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy: real -> 1, fake -> 0 (same for saturating and non-saturating GANs)."""
    return F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()


def g_loss_ns(fake_logit: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``-log D(G(z))``."""
    return F.softplus(-fake_logit).mean()


def d_loss_wgan(real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
    return fake_score.mean() - real_score.mean()


def g_loss_wgan(fake_score: torch.Tensor) -> torch.Tensor:
    return -fake_score.mean()


def gradient_penalty(d, x: torch.Tensor, *, target: float = 1.0, one_sided: bool = False) -> torch.Tensor:
    """``E[(||grad_x D(x)|| - target)^2]`` at the points ``x`` (interpolates, perturbed data, ...)."""
    x = x.detach().requires_grad_(True)
    out = d(x)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    norm = g.flatten(1).norm(dim=1)
    gap = norm - target
    if one_sided:
        gap = gap.clamp_min(0)
    return (gap**2).mean()
