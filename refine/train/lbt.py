"""Learning by Teaching (Xu et al. 2020): LBT and LBT-GAN.

The generator ``G`` *teaches* an explicit density estimator ``E`` (here a VAE): ``E`` is
trained by maximum likelihood (its ELBO) on samples of ``G``, and ``G`` is trained so that
the estimator it teaches fits the *real* data well. The bilevel problem

    max_G  E_{x ~ data}[ ELBO_{E*(G)}(x) ],   E*(G) = argmax_E E_z[ ELBO_E(G(z)) ]

is approximated by ``unroll`` (K) differentiable steps of the estimator's training on fresh
generator samples, starting from its current parameters (:func:`.unrolled.differentiable_steps`);
``G``'s gradient flows through those steps. Per batch:

1. ``estimator_steps`` ordinary updates of ``E`` on generator samples;
2. (LBT-GAN) one discriminator update, non-saturating loss;
3. one generator update on ``-ELBO_{E_K}(real)`` (+ ``gan_weight`` x the non-saturating GAN loss).

The VAE: encoder ``x -> (mu, log var)`` of a ``estimator_latent``-dimensional code,
standard-normal prior, decoder ``u -> (mean, log var)`` of a diagonal Gaussian on ``x``;
log variances are softly floored at ``LOGVAR_FLOOR``. Its two MLPs are stored under
``extra["networks"]`` (``estimator_encoder``, ``estimator_decoder``). ``lbt`` has no
discriminator on ``x`` (refine it after ``refine fit-ratio``); ``lbt-gan`` has one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import ConfigError
from ..nets import arch_config
from .loop import adam
from .losses import d_loss_ns, g_loss_ns
from .registry import register_method
from .unrolled import UNROLL_RULES, adam_moments, apply_grads, differentiable_steps, leaf_params

__all__ = ["VAEEstimator", "LBT", "LBTGAN", "LOGVAR_FLOOR"]

#: Soft lower bound of every log variance in the VAE (std >= exp(-7) ~ 1e-3).
LOGVAR_FLOOR = -14.0


def _soft_floor(t: torch.Tensor, floor: float = LOGVAR_FLOOR) -> torch.Tensor:
    return floor + F.softplus(t - floor)


def _normal(shape, like: torch.Tensor, rng) -> torch.Tensor:
    dev = rng.device if rng is not None else "cpu"
    return torch.randn(shape, generator=rng, device=dev).to(device=like.device, dtype=like.dtype)


class VAEEstimator(nn.Module):
    """A Gaussian VAE on flat ``x``: ``forward(x, eps)`` is the one-sample ELBO per row, ``(B,)``."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, int(latent_dim)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        h = self.encoder(x)
        if h.shape[1] != 2 * self.latent_dim:
            raise ConfigError(
                f"estimator encoder outputs {h.shape[1]} values, expected 2 x estimator_latent = {2 * self.latent_dim}"
            )
        mu, lv = h[:, : self.latent_dim], _soft_floor(h[:, self.latent_dim :])
        u = mu + torch.exp(0.5 * lv) * eps
        out = self.decoder(u)
        d = x.shape[1]
        if out.shape[1] != 2 * d:
            raise ConfigError(f"estimator decoder outputs {out.shape[1]} values, expected 2 x data size = {2 * d}")
        mean, lvx = out[:, :d], _soft_floor(out[:, d:])
        log_lik = -0.5 * (((x - mean) ** 2) * torch.exp(-lvx) + lvx + math.log(2 * math.pi)).sum(1)
        kl = 0.5 * (mu * mu + torch.exp(lv) - 1 - lv).sum(1)
        return log_lik - kl

    def elbo(self, x: torch.Tensor, *, rng=None) -> torch.Tensor:
        """One-sample ELBO estimate per row of ``x``."""
        return self(x, _normal((len(x), self.latent_dim), x, rng))


@register_method("lbt")
class LBT:
    """Learning by Teaching: G trains a VAE density estimator so that it fits the data (K unrolled steps).

    Options: ``lr``, ``betas``, ``lr_e`` (estimator; default ``lr``), ``unroll`` (K, 5),
    ``estimator_steps`` (1), ``unroll_rule`` (sgd | adam; default sgd), ``unroll_lr``
    (default ``lr_e``), ``estimator_latent`` (2).
    """

    has_discriminator = False

    @classmethod
    def networks(cls, *, x_dim: int, z_dim: int, hidden: int, depth: int, options: dict) -> dict:
        k = int(options.get("estimator_latent", 2))
        nets = {
            "estimator_encoder": arch_config("mlp", in_dim=x_dim, out_dim=2 * k, hidden=hidden, depth=depth),
            "estimator_decoder": arch_config("mlp", in_dim=k, out_dim=2 * x_dim, hidden=hidden, depth=depth),
        }
        if cls.has_discriminator:
            nets = {"discriminator": arch_config("mlp", in_dim=x_dim, out_dim=1, hidden=hidden, depth=depth), **nets}
        return nets

    def __init__(
        self,
        generator,
        discriminator=None,
        *,
        estimator_encoder: nn.Module,
        estimator_decoder: nn.Module,
        lr: float = 1e-3,
        betas=(0.5, 0.999),
        lr_e: float | None = None,
        lr_d: float | None = None,
        unroll: int = 5,
        estimator_steps: int = 1,
        unroll_rule: str = "sgd",
        unroll_lr: float | None = None,
        estimator_latent: int = 2,
        gan_weight: float = 0.0,
    ):
        if self.has_discriminator and discriminator is None:
            raise ConfigError(f"{self.method_name} needs a discriminator on x")
        if not self.has_discriminator and discriminator is not None:
            raise ConfigError("lbt trains no discriminator; use lbt-gan for the version with one")
        if not self.has_discriminator and gan_weight:
            raise ConfigError(f"gan_weight={gan_weight} needs a discriminator; use --method lbt-gan")
        if lr <= 0 or int(unroll) < 1 or int(estimator_steps) < 0 or gan_weight < 0:
            raise ConfigError(
                f"need lr > 0, unroll >= 1 (the generator learns only through the unrolled steps), estimator_steps >= 0 "
                f"and gan_weight >= 0; got {lr}, {unroll}, {estimator_steps}, {gan_weight}"
            )
        if unroll_rule not in UNROLL_RULES:
            raise ConfigError(f"unknown unroll_rule {unroll_rule!r}; valid: {', '.join(UNROLL_RULES)}")
        self.G, self.D = generator, discriminator
        self.E = VAEEstimator(estimator_encoder, estimator_decoder, estimator_latent)
        self.unroll, self.estimator_steps, self.unroll_rule = int(unroll), int(estimator_steps), unroll_rule
        self.lr_e = float(lr_e or lr)
        self.unroll_lr = float(unroll_lr if unroll_lr is not None else self.lr_e)
        self.gan_weight = float(gan_weight)
        self.betas = tuple(betas)
        self.opt_g = adam(generator.net.parameters(), lr, self.betas)
        self.opt_e = adam(self.E.parameters(), self.lr_e, self.betas)
        self.opt_d = adam(discriminator.parameters(), lr_d or lr, self.betas) if discriminator is not None else None

    def estimator_step(self, x: torch.Tensor, *, rng=None) -> float:
        """One ordinary maximum-likelihood (ELBO) update of the estimator on ``x``; returns the batch ELBO before it."""
        loss = -self.E.elbo(x, rng=rng).mean()
        self.opt_e.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_e.step()
        return -loss.item()

    def teaching_loss(self, real: torch.Tensor, *, rng=None) -> torch.Tensor:
        """``-ELBO(real)`` under the estimator after ``unroll`` differentiable updates on fresh generator samples."""
        b = len(real)
        buffers = dict(self.E.named_buffers())

        def inner(p):
            xg = self.G(self.G.sample_latent(b, rng=rng))
            return -functional_call(self.E, (p, buffers), (xg, _normal((b, self.E.latent_dim), xg, rng))).mean()

        moments = adam_moments(self.opt_e, self.E) if self.unroll_rule == "adam" else None
        params = differentiable_steps(
            leaf_params(self.E),
            inner,
            self.unroll,
            lr=self.unroll_lr,
            rule=self.unroll_rule,
            betas=self.betas,
            moments=moments,
            create_graph=True,
        )
        return -functional_call(self.E, (params, buffers), (real, _normal((b, self.E.latent_dim), real, rng))).mean()

    def step(self, real: torch.Tensor, *, rng=None) -> dict:
        b = len(real)
        logs = {}
        for _ in range(self.estimator_steps):
            with torch.no_grad():
                xg = self.G(self.G.sample_latent(b, rng=rng))
            logs["elbo_fake"] = self.estimator_step(xg, rng=rng)
        if self.D is not None:
            with torch.no_grad():
                xg = self.G(self.G.sample_latent(b, rng=rng))
            loss_d = d_loss_ns(self.D(real), self.D(xg))
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            logs["loss_d"] = loss_d.item()
        teach = self.teaching_loss(real, rng=rng)
        loss_g = teach
        if self.D is not None and self.gan_weight > 0:
            loss_g = loss_g + self.gan_weight * g_loss_ns(self.D(self.G(self.G.sample_latent(b, rng=rng))))
        gparams = list(self.G.net.parameters())
        apply_grads(gparams, torch.autograd.grad(loss_g, gparams, allow_unused=True))
        self.opt_g.step()
        return {**logs, "elbo_real": -teach.item(), "loss_g": loss_g.item()}

    def modules(self) -> dict[str, nn.Module]:
        out = {"generator": self.G.net, "estimator_encoder": self.E.encoder, "estimator_decoder": self.E.decoder}
        if self.D is not None:
            out["discriminator"] = self.D
        return out

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        out = {"generator": self.opt_g, "estimator": self.opt_e}
        if self.opt_d is not None:
            out["discriminator"] = self.opt_d
        return out


@register_method("lbt-gan")
class LBTGAN(LBT):
    """LBT plus lambda (gan_weight, default 1) times the non-saturating GAN loss, with a discriminator on x."""

    has_discriminator = True

    def __init__(
        self,
        generator,
        discriminator,
        *,
        estimator_encoder: nn.Module,
        estimator_decoder: nn.Module,
        lr: float = 1e-3,
        betas=(0.5, 0.999),
        lr_e: float | None = None,
        lr_d: float | None = None,
        unroll: int = 5,
        estimator_steps: int = 1,
        unroll_rule: str = "sgd",
        unroll_lr: float | None = None,
        estimator_latent: int = 2,
        gan_weight: float = 1.0,
    ):
        super().__init__(
            generator,
            discriminator,
            estimator_encoder=estimator_encoder,
            estimator_decoder=estimator_decoder,
            lr=lr,
            betas=betas,
            lr_e=lr_e,
            lr_d=lr_d,
            unroll=unroll,
            estimator_steps=estimator_steps,
            unroll_rule=unroll_rule,
            unroll_lr=unroll_lr,
            estimator_latent=estimator_latent,
            gan_weight=gan_weight,
        )
