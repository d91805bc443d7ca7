"""The non-saturating GAN (Goodfellow et al. 2014), the base of most other methods."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from ..generator import LatentGenerator
from .loop import adam, fit
from .losses import d_loss_ns, g_loss_ns
from .registry import register_method

__all__ = [
    "GAN",
    "REFIT_LR",
    "REFIT_MAX_EPOCHS",
    "REFIT_MIN_DELTA",
    "REFIT_PATIENCE",
    "fit_discriminator",
    "heldout_logistic_loss",
]

# How ``refine fit-ratio --kind discriminator`` refits a discriminator when no flag says otherwise:
# Adam at REFIT_LR, stopped after REFIT_PATIENCE epochs without a held-out loss lower by more than
# REFIT_MIN_DELTA nats, at most REFIT_MAX_EPOCHS epochs, the best epoch kept. The evidence for the
# choice (three pairs, two of them trained outside refine) is in docs/ratios.md.
REFIT_LR = 1e-4
REFIT_PATIENCE = 3
REFIT_MAX_EPOCHS = 100
REFIT_MIN_DELTA = 1e-3


@register_method("gan")
class GAN:
    """Non-saturating GAN: ``d_steps`` discriminator updates (BCE on logits), then one generator update."""

    def __init__(
        self,
        generator: LatentGenerator,
        discriminator: nn.Module,
        *,
        lr: float = 1e-3,
        betas=(0.5, 0.999),
        d_steps: int = 1,
        lr_d: float | None = None,
    ):
        if lr <= 0 or d_steps < 1:
            raise ConfigError(f"need lr > 0 and d_steps >= 1, got {lr} and {d_steps}")
        self.G, self.D = generator, discriminator
        self.d_steps = d_steps
        self.opt_g = adam(generator.net.parameters(), lr, betas)
        self.opt_d = adam(discriminator.parameters(), lr_d or lr, betas)

    def d_loss(self, real, fake):
        return d_loss_ns(self.D(real), self.D(fake)), {}

    def g_loss(self, z, fake):
        return g_loss_ns(self.D(fake)), {}

    def step(self, real: torch.Tensor, *, rng=None) -> dict:
        b = len(real)
        for _ in range(self.d_steps):
            with torch.no_grad():
                fake = self.G(self.G.sample_latent(b, rng=rng))
            loss_d, extra_d = self.d_loss(real, fake)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        z = self.G.sample_latent(b, rng=rng)
        fake = self.G(z)
        loss_g, extra_g = self.g_loss(z, fake)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), **extra_d, **extra_g}

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.G.net, "discriminator": self.D}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}


@torch.no_grad()
def heldout_logistic_loss(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, *, batch_size: int = 4096):
    """``(loss, accuracy)`` of ``discriminator``'s logit on held-out ``real`` vs ``fake`` (equal weight to each side)."""
    was_training = discriminator.training
    discriminator.eval()
    try:
        lr_ = torch.cat([discriminator(c).reshape(-1) for c in real.split(batch_size)])
        lf = torch.cat([discriminator(c).reshape(-1) for c in fake.split(batch_size)])
    finally:
        discriminator.train(was_training)
    loss = 0.5 * (torch.nn.functional.softplus(-lr_).mean() + torch.nn.functional.softplus(lf).mean())
    acc = 0.5 * ((lr_ > 0).float().mean() + (lf < 0).float().mean())
    return float(loss), float(acc)


class _DiscriminatorOnly:
    """Fine-tune a discriminator against a fixed generator (the ratio-fitting step of DRS)."""

    def __init__(self, generator: LatentGenerator, discriminator: nn.Module, *, lr: float, betas):
        self.G, self.D = generator, discriminator
        self.opt = adam(discriminator.parameters(), lr, betas)

    def step(self, real, *, rng=None):
        with torch.no_grad():
            fake = self.G(self.G.sample_latent(len(real), rng=rng))
        lr_, lf = self.D(real), self.D(fake)
        loss = d_loss_ns(lr_, lf)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        acc = 0.5 * ((lr_ > 0).float().mean() + (lf < 0).float().mean())
        return {"loss_d": loss.item(), "acc": acc.item()}


def fit_discriminator(
    generator: LatentGenerator,
    discriminator: nn.Module,
    real: torch.Tensor,
    *,
    epochs: int = 10,
    batch_size: int = 512,
    lr: float = 1e-3,
    betas=(0.5, 0.999),
    lr_drop_epoch: int | None = None,
    val: torch.Tensor | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    rng=None,
    progress: bool = False,
) -> list[dict]:
    """Train ``discriminator`` (in place) to tell ``real`` from fresh samples of the fixed ``generator``.

    The discriminator saved with a GAN was trained against a moving generator; refitting it
    against the final one turns its logit into a usable ratio estimate (DRS, Azadi et al.).
    The generator's parameters and ``requires_grad`` flags are not touched. With
    ``lr_drop_epoch``, the learning rate drops tenfold after that many epochs.

    With held-out real samples ``val``, each epoch's row also has ``val_loss`` (the logistic
    loss on ``val`` against as many generated samples, drawn once) and ``val_acc``; with
    ``patience``, training ends after that many epochs in which ``val_loss`` did not fall more than
    ``min_delta`` below the last epoch that did, and the weights of the epoch with the lowest
    ``val_loss`` are put back (``epochs`` is then the cap). ``min_delta`` (nats) ends runs whose
    held-out loss only creeps towards zero, as it does when real and generated samples are
    perfectly separable and the logits keep growing. The last row says ``best_epoch``.
    """
    if patience is not None and (val is None or patience < 1):
        raise ConfigError(
            f"early stopping needs held-out real samples (val=) and patience >= 1, got patience {patience}"
        )
    was_training = discriminator.training
    flags = [p.requires_grad for p in discriminator.parameters()]
    discriminator.train().requires_grad_(True)
    method = _DiscriminatorOnly(generator, discriminator, lr=lr, betas=betas)
    if val is not None:
        with torch.no_grad():
            val_fake = torch.cat([generator(generator.sample_latent(len(c), rng=rng)) for c in val.split(batch_size)])
    if not min_delta >= 0 or not math.isfinite(min_delta):
        raise ConfigError(f"min_delta must be a finite number >= 0, got {min_delta}")
    best = {"loss": math.inf, "epoch": 0, "state": None}
    ref = {"loss": math.inf, "epoch": 0}  # the last epoch whose loss fell by more than min_delta

    def on_epoch(epoch, history):
        if lr_drop_epoch is not None and epoch == lr_drop_epoch:
            for group in method.opt.param_groups:
                group["lr"] = lr / 10
        if val is None:
            return False
        loss, acc = heldout_logistic_loss(discriminator, val, val_fake, batch_size=batch_size)
        history[-1].update(val_loss=loss, val_acc=acc)
        if loss < best["loss"]:
            best.update(
                loss=loss, epoch=epoch, state={k: v.detach().clone() for k, v in discriminator.state_dict().items()}
            )
        if loss < ref["loss"] - min_delta:
            ref.update(loss=loss, epoch=epoch)
        return patience is not None and epoch - ref["epoch"] >= patience

    try:
        history = fit(
            method,
            real,
            epochs=epochs,
            batch_size=batch_size,
            rng=rng,
            device=real.device,
            progress=progress,
            on_epoch=on_epoch,
            desc=f"refitting (stops early, at most {epochs} epochs)" if patience is not None else "refitting",
            postfix=(lambda h: {"held-out loss": f"{h[-1]['val_loss']:.4g}", "best epoch": best["epoch"]})
            if val is not None
            else None,
        )
        if patience is not None and best["state"] is not None:
            discriminator.load_state_dict(best["state"])
        if history and val is not None:
            history[-1]["best_epoch"] = best["epoch"]
        return history
    finally:
        discriminator.train(was_training)
        for p, f in zip(discriminator.parameters(), flags):
            p.requires_grad_(f)
