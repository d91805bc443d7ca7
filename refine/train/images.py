"""Recipe for image GANs: a DCGAN generator and discriminator trained on an image dataset.

Defaults follow DCGAN (Radford et al. 2016): Adam lr 2e-4, betas (0.5, 0.999), batch 64,
z ~ N(0, I_100) shaped ``(100, 1, 1)``, non-saturating loss. The discriminator uses spectral
normalisation by default (``d_norm``; see :mod:`refine.nets.dcgan`); a gradient penalty is the
``gan-gp`` method (``-o gp_weight=10``). Any registered method that needs no networks besides
G and D (``gan``, ``gan-gp``, ``wgan-gp``, ...) trains the same way.

After every epoch a grid of 64 samples from fixed latents is written (``grid_dir/epoch_NNN.png``,
generator in eval mode), and ``on_epoch(epoch, run, trainer)`` runs, which the CLI uses to
write a resumable checkpoint (:mod:`refine.train.checkpointing`). The fixed latents come from
their own seed, so drawing them does not change the training run's random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data.images import ImageBatches, ImageData
from ..errors import CheckpointError, ConfigError
from ..generator import LatentGenerator, NormalPrior
from ..io import save_gan
from ..nets import arch_config, build_from_config
from ..nets.dcgan import D_NORMS, IMAGE_SIZES
from ..plot import save_image_grid
from .checkpointing import STATE_KEY, restore_training_state
from .loop import fit
from .registry import get_method
from .toy2d import check_method_options

__all__ = ["IMAGE_PROTOCOL", "image_networks", "ImageRun", "train_image_gan", "save_image_checkpoint", "save_grid"]

IMAGE_PROTOCOL = {
    "lr": 2e-4,
    "betas": (0.5, 0.999),
    "batch_size": 64,
    "latent_dim": 100,
    "g_width": 64,
    "d_width": 64,
    "d_norm": "spectral",
}
GRID_SEED = 12345


def image_networks(
    image_size: int,
    channels: int,
    *,
    latent_dim: int = 100,
    g_width: int = 64,
    d_width: int = 64,
    d_norm: str = "spectral",
) -> tuple[dict, dict]:
    """Architecture configs ``(generator, discriminator)`` of the DCGAN pair."""
    if image_size not in IMAGE_SIZES:
        raise ConfigError(
            f"image GANs support sizes {', '.join(map(str, IMAGE_SIZES))}; the data is {image_size} px (pass --image-size to resize it)"
        )
    if d_norm not in D_NORMS:
        raise ConfigError(f"unknown discriminator norm {d_norm!r}; valid: {', '.join(D_NORMS)}")
    return (
        arch_config("dcgan-g", image_size=image_size, channels=channels, nz=latent_dim, width=g_width),
        arch_config("dcgan-d", image_size=image_size, channels=channels, width=d_width, norm=d_norm),
    )


@dataclass
class ImageRun:
    """A trained image GAN: generator, discriminator, their configs and the run record."""

    generator: LatentGenerator
    discriminator: nn.Module
    archs: dict[str, dict]
    discriminator_output: str
    meta: dict = field(default_factory=dict)


@torch.no_grad()
def save_grid(path: str | Path, generator: LatentGenerator, z: torch.Tensor) -> None:
    """Samples ``G(z)`` as one PNG grid; the generator is put in eval mode for it and restored."""

    net = generator.net
    was = net.training if isinstance(net, nn.Module) else False
    if isinstance(net, nn.Module):
        net.eval()
    try:
        x = generator(z.to(generator.device))
    finally:
        if isinstance(net, nn.Module):
            net.train(was)
    save_image_grid(path, x, output_range=generator.output_range)


def train_image_gan(
    data: ImageData,
    *,
    epochs: int = 5,
    method: str = "gan",
    method_options: dict | None = None,
    batch_size: int = 64,
    latent_dim: int = 100,
    g_width: int = 64,
    d_width: int = 64,
    d_norm: str = "spectral",
    rng: torch.Generator | None = None,
    device="cpu",
    progress: bool = False,
    init_seed: int | None = None,
    resume: dict | None = None,
    on_epoch=None,
    grid_dir: str | Path | None = None,
    grid_n: int = 64,
) -> ImageRun:
    """Train a DCGAN pair on ``data``; returns an :class:`ImageRun`.

    Network initialisation uses ``init_seed`` (torch's global RNG is saved and restored
    around it); shuffling and latents use ``rng``. ``resume`` is a training state to
    continue from (same settings and seed); ``on_epoch(epoch, run, trainer)`` runs after
    each epoch, after the sample grid is written.
    """
    cls = get_method(method)
    if getattr(cls, "networks", None) is not None:
        raise ConfigError(
            f"training method {method!r} needs networks besides a generator and a discriminator on x; "
            "image training supports methods such as gan, gan-gp and wgan-gp"
        )
    if epochs < 1 or batch_size < 1 or latent_dim < 1 or g_width < 1 or d_width < 1:
        raise ConfigError("epochs, batch size, latent size and widths must be positive")
    opts = {"lr": IMAGE_PROTOCOL["lr"], "betas": IMAGE_PROTOCOL["betas"], **(method_options or {})}
    check_method_options(cls, opts)
    g_arch, d_arch = image_networks(
        data.image_size, data.channels, latent_dim=latent_dim, g_width=g_width, d_width=d_width, d_norm=d_norm
    )
    with torch.random.fork_rng(devices=[]):
        if init_seed is not None:
            torch.manual_seed(init_seed)
        gnet, dnet = build_from_config(g_arch), build_from_config(d_arch)
    gnet.to(device).train()
    dnet.to(device).train()
    G = LatentGenerator(gnet, NormalPrior((latent_dim, 1, 1)), output_range="[-1,1]")
    trainer = cls(G, dnet, **opts)
    meta = {
        "dataset": data.spec,
        "data": data.describe(),
        "n_train": len(data),
        "image_size": data.image_size,
        "channels": data.channels,
        "epochs": epochs,
        "method": method,
        "batch_size": batch_size,
        "latent_dim": latent_dim,
        "g_width": g_width,
        "d_width": d_width,
        "d_norm": d_norm,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
        "init_seed": init_seed,
        "history": [],
    }
    run = ImageRun(
        G, dnet, {"generator": g_arch, "discriminator": d_arch}, getattr(cls, "discriminator_output", "logit"), meta
    )
    start, past = restore_training_state(trainer, resume, rng=rng) if resume is not None else (0, [])
    grid_z = NormalPrior((latent_dim, 1, 1)).sample(grid_n, rng=torch.Generator().manual_seed(GRID_SEED))
    if grid_dir is not None:
        Path(grid_dir).mkdir(parents=True, exist_ok=True)

    def after_epoch(epoch, history):
        run.meta["history"] = past + history
        if grid_dir is not None:
            save_grid(Path(grid_dir) / f"epoch_{epoch:03d}.png", G, grid_z)
        if on_epoch is not None:
            on_epoch(epoch, run, trainer)

    batches = ImageBatches(data, batch_size, rng=rng, device=device)
    run.meta["history"] = past + fit(
        trainer,
        batches,
        epochs=epochs,
        batch_size=batch_size,
        rng=rng,
        device=device,
        progress=progress,
        start_epoch=start,
        on_epoch=after_epoch,
    )
    gnet.eval()
    dnet.eval()
    return run


def save_image_checkpoint(path, run: ImageRun, *, meta: dict | None = None, train_state: dict | None = None) -> None:
    """Write ``run`` as a ``refine.gan`` checkpoint (``output_range`` [-1,1]); with ``train_state``, resumable."""
    extra = {STATE_KEY: train_state} if train_state is not None else None
    save_gan(
        path,
        generator=run.generator.net,
        generator_arch=run.archs["generator"],
        prior=run.generator.prior,
        discriminator=run.discriminator,
        discriminator_arch=run.archs["discriminator"],
        discriminator_output=run.discriminator_output,
        output_range="[-1,1]",
        meta={**run.meta, **(meta or {})},
        extra=extra,
    )


#: Settings a resumed image run takes from its checkpoint's record (CLI name -> meta key).
RESUMED_SETTINGS = {
    "method": "method",
    "data": "dataset",
    "n_train": "n_train",
    "batch_size": "batch_size",
    "latent_dim": "latent_dim",
    "g_width": "g_width",
    "d_width": "d_width",
    "d_norm": "d_norm",
    "image_size": "image_size",
    "channels": "channels",
    "seed": "seed",
    "options": "options",
}


def resume_settings(meta: dict, explicit: dict, *, where: str = "checkpoint") -> dict:
    """Settings of the run being resumed (from its ``meta``); an ``explicit`` setting that disagrees is a ConfigError."""

    out = {}
    for name, key in RESUMED_SETTINGS.items():
        if key not in meta:
            raise CheckpointError(
                f"{where}: its record lacks {key!r}, so the run cannot be continued exactly; start a new run"
            )
        stored = meta[key]
        if name == "options":
            for k, v in (explicit.get("options") or {}).items():
                if stored.get(k) != (list(v) if isinstance(v, tuple) else v):
                    raise ConfigError(
                        f"-o {k}={v} disagrees with the run being resumed ({k}={stored.get(k)!r}); drop the option: a resumed run keeps its settings"
                    )
        elif name in explicit and explicit[name] is not None and explicit[name] != stored:
            raise ConfigError(
                f"--{name.replace('_', '-')} {explicit[name]} disagrees with the run being resumed ({stored}); "
                "drop the option: a resumed run keeps its settings"
            )
        out[name] = stored
    return out
