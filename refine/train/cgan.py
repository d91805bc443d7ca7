"""Class-conditional GAN on labelled images: ``refine train --method cgan``.

A class-conditional DCGAN generator with conditional BatchNorm and a projection
discriminator with spectral norm (:mod:`refine.nets.conditional`), trained with the hinge
loss (SN-GAN, BigGAN) or the non-saturating loss (``-o loss=ns``). Fake labels are drawn
uniformly over the classes from the run's ``rng``, so a run is reproducible and resumable
exactly like the unconditional methods (:mod:`refine.train.checkpointing`).

The hinge loss does not make the logit a log density ratio (its optimum saturates at
``±1``); the non-saturating loss does. :func:`fit_conditional_discriminator` refits the
saved discriminator with the logistic loss against the final generator, as DRS does for
unconditional GANs, before its logit is read as ``log r(x | y)``.

The checkpoint is a ``refine.gan`` file with ``conditional={"num_classes": K, "label": "index"}``,
so :func:`refine.load_gan` returns the :class:`~refine.conditional.ConditionalGenerator` and its
conditional ratio. Sample grids show one row per class.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..conditional import ConditionalGenerator
from ..data.images import ImageBatches, ImageData
from ..errors import ConfigError, DataError, NonFiniteError
from ..generator import NormalPrior
from ..io import save_gan
from ..nets import arch_config, build_from_config
from ..plot import save_image_grid
from .checkpointing import STATE_KEY, restore_training_state
from .images import ImageRun
from .loop import adam
from .losses import d_loss_ns, g_loss_ns
from .registry import register_method
from .toy2d import check_method_options

__all__ = [
    "CGAN",
    "CGAN_LOSSES",
    "cgan_networks",
    "fit_conditional_discriminator",
    "save_cgan_checkpoint",
    "save_class_grid",
    "train_cgan",
]

CGAN_LOSSES = ("hinge", "ns")
GRID_SEED = 12345


def _losses(loss: str):
    if loss == "hinge":
        return (lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean()), (lambda f: -f.mean())
    return d_loss_ns, g_loss_ns


@register_method("cgan")
class CGAN:
    """Conditional GAN step: ``d_steps`` discriminator updates on ``(x, y)`` batches, then one generator update.

    ``step(real, y, rng=)`` takes the labels of the real batch; the generator's labels are
    drawn uniformly over the classes.
    """

    conditional = True  # trains on labelled images only; refine train routes it to train_cgan

    def __init__(
        self,
        generator: ConditionalGenerator,
        discriminator: nn.Module,
        *,
        lr: float = 2e-4,
        betas=(0.0, 0.9),
        d_steps: int = 1,
        lr_d: float | None = None,
        loss: str = "hinge",
    ):
        if not isinstance(generator, ConditionalGenerator):
            raise ConfigError(
                "training method 'cgan' trains class-conditional networks on labelled image data (refine train --method cgan --data mnist:ROOT)"
            )
        if lr <= 0 or d_steps < 1 or (lr_d is not None and lr_d <= 0):
            raise ConfigError(f"need lr > 0, lr_d > 0 and d_steps >= 1, got {lr}, {lr_d} and {d_steps}")
        if loss not in CGAN_LOSSES:
            raise ConfigError(f"unknown cgan loss {loss!r}; valid: {', '.join(CGAN_LOSSES)}")
        self.G, self.D, self.d_steps, self.loss = generator, discriminator, d_steps, loss
        self._d_loss, self._g_loss = _losses(loss)
        self.opt_g = adam(generator.net.parameters(), lr, betas)
        self.opt_d = adam(discriminator.parameters(), lr_d or lr, betas)

    def _fake(self, b: int, rng, device):
        z = self.G.prior.sample(b, rng=rng, device=device)
        y = torch.randint(
            0, self.G.num_classes, (b,), generator=rng, device=rng.device if rng is not None else "cpu"
        ).to(device)
        return z, y

    def step(self, real: torch.Tensor, y: torch.Tensor, *, rng=None) -> dict:
        b, dev = len(real), real.device
        for _ in range(self.d_steps):
            z, yf = self._fake(b, rng, dev)
            with torch.no_grad():
                fake = self.G(z, yf)
            lr_, lf = self.D(real, y), self.D(fake, yf)
            loss_d = self._d_loss(lr_, lf)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        z, yf = self._fake(b, rng, dev)
        loss_g = self._g_loss(self.D(self.G(z, yf), yf))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "d_real": lr_.mean().item(),
            "d_fake": lf.mean().item(),
        }

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.G.net, "discriminator": self.D}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}


def cgan_networks(
    image_size: int, channels: int, num_classes: int, *, latent_dim: int = 100, g_width: int = 64, d_width: int = 64
) -> tuple[dict, dict]:
    """Architecture configs ``(generator, discriminator)`` of the conditional pair."""
    return (
        arch_config(
            "cdcgan-g", image_size=image_size, channels=channels, nz=latent_dim, width=g_width, num_classes=num_classes
        ),
        arch_config("proj-d", image_size=image_size, channels=channels, width=d_width, num_classes=num_classes),
    )


def class_grid_latents(num_classes: int, latent_dim: int, per_class: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed latents and labels for a grid of one row per class (the same latents in every row)."""
    z = NormalPrior((latent_dim, 1, 1)).sample(per_class, rng=torch.Generator().manual_seed(GRID_SEED))
    return z.repeat(num_classes, 1, 1, 1), torch.arange(num_classes).repeat_interleave(per_class)


@torch.no_grad()
def save_class_grid(path, generator: ConditionalGenerator, z: torch.Tensor, y: torch.Tensor, per_class: int) -> None:
    """``G(z, y)`` as a PNG grid, one row per class (the generator in eval mode, then restored)."""

    net = generator.net
    was = net.training
    net.eval()
    try:
        x = generator(z.to(generator.device), y.to(generator.device))
    finally:
        net.train(was)
    save_image_grid(path, x, output_range=generator.output_range, nrow=per_class)


def _epoch(trainer: CGAN, batches: ImageBatches, *, rng, epoch: int, epochs: int, progress: bool) -> dict:
    sums: dict[str, float] = {}
    count = 0
    bar = tqdm(batches, total=len(batches), desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False)
    try:
        for real, y in bar:
            logs = trainer.step(real, y, rng=rng)
            for k, v in logs.items():
                if not math.isfinite(v):
                    raise NonFiniteError(f"training diverged: {k} = {v} in epoch {epoch}; lower the learning rate")
                sums[k] = sums.get(k, 0.0) + v
            count += 1
    finally:
        bar.close()
    return {"epoch": epoch, **{k: v / max(count, 1) for k, v in sums.items()}}


def train_cgan(
    data: ImageData,
    *,
    epochs: int = 5,
    method_options: dict | None = None,
    batch_size: int = 64,
    latent_dim: int = 100,
    g_width: int = 64,
    d_width: int = 64,
    rng: torch.Generator | None = None,
    device="cpu",
    progress: bool = False,
    init_seed: int | None = None,
    resume: dict | None = None,
    on_epoch=None,
    grid_dir: str | Path | None = None,
) -> ImageRun:
    """Train the conditional pair on labelled ``data``; returns an :class:`~refine.train.images.ImageRun`
    whose generator is a :class:`~refine.conditional.ConditionalGenerator`. Arguments as
    :func:`refine.train.images.train_image_gan`."""

    if data.labels is None:
        raise DataError(
            f"{data.spec} has no labels; method cgan trains on labelled images (MNIST, Fashion-MNIST, CIFAR-10, a folder of class subfolders)"
        )
    if epochs < 1 or batch_size < 1 or latent_dim < 1 or g_width < 1 or d_width < 1:
        raise ConfigError("epochs, batch size, latent size and widths must be positive")
    opts = dict(method_options or {})
    check_method_options(CGAN, opts)
    k = int(data.num_classes)
    g_arch, d_arch = cgan_networks(
        data.image_size, data.channels, k, latent_dim=latent_dim, g_width=g_width, d_width=d_width
    )
    with torch.random.fork_rng(devices=[]):
        if init_seed is not None:
            torch.manual_seed(init_seed)
        gnet, dnet = build_from_config(g_arch), build_from_config(d_arch)
    gnet.to(device).train()
    dnet.to(device).train()
    G = ConditionalGenerator(gnet, k, label="index", prior=NormalPrior((latent_dim, 1, 1)), output_range="[-1,1]")
    trainer = CGAN(G, dnet, **opts)
    meta = {
        "dataset": data.spec,
        "data": data.describe(),
        "n_train": len(data),
        "image_size": data.image_size,
        "channels": data.channels,
        "num_classes": k,
        "classes": list(data.classes) if data.classes else None,
        "epochs": epochs,
        "method": "cgan",
        "batch_size": batch_size,
        "latent_dim": latent_dim,
        "g_width": g_width,
        "d_width": d_width,
        "d_norm": "spectral",
        "options": {key: list(v) if isinstance(v, tuple) else v for key, v in opts.items()},
        "init_seed": init_seed,
        "history": [],
    }
    run = ImageRun(G, dnet, {"generator": g_arch, "discriminator": d_arch}, "logit", meta)  # type: ignore[arg-type]
    start, past = restore_training_state(trainer, resume, rng=rng) if resume is not None else (0, [])
    per_class = 8
    grid_z, grid_y = class_grid_latents(k, latent_dim, per_class)
    if grid_dir is not None:
        Path(grid_dir).mkdir(parents=True, exist_ok=True)
    batches = ImageBatches(data, batch_size, rng=rng, device=device, with_labels=True)
    history = list(past)
    for epoch in range(start + 1, epochs + 1):
        history.append(_epoch(trainer, batches, rng=rng, epoch=epoch, epochs=epochs, progress=progress))
        run.meta["history"] = history
        if grid_dir is not None:
            save_class_grid(Path(grid_dir) / f"epoch_{epoch:03d}.png", G, grid_z, grid_y, per_class)
        if on_epoch is not None:
            on_epoch(epoch, run, trainer)
    gnet.eval()
    dnet.eval()
    return run


def save_cgan_checkpoint(path, run: ImageRun, *, meta: dict | None = None, train_state: dict | None = None) -> None:
    """Write a conditional ``refine.gan`` checkpoint (``conditional`` entry, output range [-1,1]); with ``train_state``, resumable."""
    extra = {STATE_KEY: train_state} if train_state is not None else None
    g = run.generator
    save_gan(
        path,
        generator=g.net,
        generator_arch=run.archs["generator"],
        prior=g.prior,
        discriminator=run.discriminator,
        discriminator_arch=run.archs["discriminator"],
        discriminator_output="logit",
        output_range="[-1,1]",
        meta={**run.meta, **(meta or {})},
        extra=extra,
        conditional={"num_classes": g.num_classes, "label": g.label},
    )


def fit_conditional_discriminator(
    generator: ConditionalGenerator,
    discriminator: nn.Module,
    data: ImageData,
    *,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 2e-4,
    betas=(0.5, 0.999),
    rng=None,
    device="cpu",
    progress: bool = False,
) -> list[dict]:
    """Refit ``discriminator(x, y)`` in place with the logistic loss against the fixed ``generator``,
    real and generated batches sharing the real batch's labels, so that its logit estimates
    ``log p(x | y) / p_G(x | y)``. The generator is not touched; the discriminator comes back in
    eval mode. Returns one record per epoch (loss, accuracy)."""
    discriminator.train().requires_grad_(True)
    opt = adam(discriminator.parameters(), lr, betas)
    batches = ImageBatches(data, batch_size, rng=rng, device=device, with_labels=True)
    history = []
    try:
        for epoch in range(1, epochs + 1):
            sums, count = {"loss_d": 0.0, "acc": 0.0}, 0
            for real, y in tqdm(
                batches, total=len(batches), desc=f"refit D {epoch}/{epochs}", disable=not progress, leave=False
            ):
                with torch.no_grad():
                    fake = generator(generator.prior.sample(len(real), rng=rng, device=device), y)
                lr_, lf = discriminator(real, y), discriminator(fake, y)
                loss = d_loss_ns(lr_, lf)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums["loss_d"] += loss.item()
                sums["acc"] += 0.5 * ((lr_ > 0).float().mean() + (lf < 0).float().mean()).item()
                count += 1
            history.append({"epoch": epoch, **{k: v / max(count, 1) for k, v in sums.items()}})
    finally:
        discriminator.eval().requires_grad_(False)
    return history
