"""Resolving the CLI's checkpoint and ratio arguments into a generator and a ratio.

``--ckpt`` is a refine checkpoint or a foreign generator file (a state_dict with
``--arch`` or a safetensors file with ``--arch``; with ``--trust-code`` also a
TorchScript file, a ``torch.export`` program or a pickled module); ``--disc`` a foreign discriminator file the same way. See
:mod:`refine.io.foreign` for the routes and what each one checks.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

import torch
import typer

from ..checks import check_generator, check_gradients, check_pair, gradients_through_generator
from ..errors import ConfigError
from ..fs import file_sha256
from ..generator import OUTPUT_RANGES
from ..io.checkpoints import LoadedGAN, load_gan, load_ratio
from ..io.foreign import detect_format, generator_from_loaded, load_network
from ..io.pretrained import DEFAULT_GAN, DEFAULT_RATIO, pretrained_path
from ..ratio.discriminator import DISCRIMINATOR_OUTPUTS, DiscriminatorRatio

__all__ = ["Inputs", "Foreign", "load_inputs", "foreign_options"]


@dataclass
class Inputs:
    gan: LoadedGAN
    ratio: object | None
    provenance: dict = field(default_factory=dict)

    @property
    def dataset(self) -> str | None:
        return (self.gan.config.get("meta") or {}).get("dataset")


@dataclass
class Foreign:
    """The CLI's declarations for networks refine did not write (all optional)."""

    arch: Optional[str] = None
    arch_kwargs: Optional[str] = None
    state_key: Optional[str] = None
    latent_shape: Optional[str] = None
    prior: Optional[str] = None
    output_range: Optional[str] = None
    disc: Optional[Path] = None
    disc_arch: Optional[str] = None
    disc_arch_kwargs: Optional[str] = None
    disc_state_key: Optional[str] = None
    disc_output: Optional[str] = None
    disc_temperature: float = 1.0
    trust_code: bool = False

    def generator_flags(self) -> list[str]:
        names = ("arch", "arch_kwargs", "state_key", "latent_shape", "prior", "output_range")
        return ["--" + n.replace("_", "-") for n in names if getattr(self, n) not in (None, "")]

    def discriminator_flags(self) -> list[str]:
        names = ("disc_arch", "disc_arch_kwargs", "disc_state_key", "disc_output")
        flags = ["--" + n.replace("_", "-") for n in names if getattr(self, n) not in (None, "")]
        if self.disc_temperature != 1.0:
            flags.append("--disc-temperature")
        return flags


_HELP = {
    "arch": "foreign generator: 'package.module:factory' (or 'file.py:factory', or a refine arch name) that builds the network for the state_dict in --ckpt",
    "arch_kwargs": "JSON keyword arguments for --arch, e.g. '{\"nz\": 100}'",
    "state_key": "entry of --ckpt that holds the generator's state_dict when the file holds several (e.g. netG)",
    "latent_shape": "foreign generator's latent shape, e.g. 100 or 100,1,1 (read from a torch.export program)",
    "prior": 'foreign generator\'s latent prior: normal (default), uniform (on [-1,1]) or JSON, e.g. \'{"name": "uniform", "low": 0, "high": 1}\'',
    "output_range": "foreign generator's output range: [-1,1] (tanh), [0,1] (sigmoid) or none; required for images",
    "disc": "foreign discriminator file (state_dict with --disc-arch, TorchScript, torch.export program); replaces the checkpoint's",
    "disc_arch": "'package.module:factory' that builds the discriminator for the state_dict in --disc",
    "disc_arch_kwargs": "JSON keyword arguments for --disc-arch",
    "disc_state_key": "entry of --disc that holds the discriminator's state_dict (e.g. netD)",
    "disc_output": f"what --disc returns: {', '.join(DISCRIMINATOR_OUTPUTS)} (required with --disc)",
    "disc_temperature": "log r = score / T for --disc (for a critic: the energy scale)",
    "trust_code": "load files that carry code (TorchScript, torch.export programs, whole-module pickles): they can run anything; only for files you trust (the safe route: a state_dict or safetensors file with --arch)",
}


#: Older spellings that still work.
_ALIASES = {"trust_code": ("--allow-pickle",)}


def _option(name: str, default):
    return typer.Option(default, "--" + name.replace("_", "-"), *_ALIASES.get(name, ()), help=_HELP[name])


def foreign_options(fn):
    """Add the foreign-network options to a command; they reach it as one ``foreign: Foreign`` argument."""
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.name != "foreign"]
    hints = {"disc": Optional[Path], "disc_temperature": float, "trust_code": bool}
    extra = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=_option(f.name, f.default),
            annotation=hints.get(f.name, Optional[str]),
        )
        for f in fields(Foreign)
    ]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        foreign = Foreign(**{f.name: kwargs.pop(f.name, f.default) for f in fields(Foreign)})
        return fn(*args, foreign=foreign, **kwargs)

    wrapper.__signature__ = sig.replace(
        parameters=own + [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in extra]
    )
    wrapper.__annotations__ = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if k != "foreign"}
    return wrapper


def _output_range(text: str | None) -> str | None:
    if text is None:
        return None
    norm = text.replace(" ", "").lower()
    if norm not in OUTPUT_RANGES:
        raise ConfigError(f"--output-range {text!r}: valid ranges are {', '.join(OUTPUT_RANGES)}")
    return norm


def _foreign_generator(ckpt: Path, f: Foreign, device: torch.device) -> tuple[LoadedGAN, dict, str]:
    loaded = load_network(
        ckpt,
        arch=f.arch,
        arch_kwargs=f.arch_kwargs,
        state_key=f.state_key,
        trust_code=f.trust_code,
        device=device,
        role="generator",
    )
    gen = generator_from_loaded(
        loaded,
        latent_shape=f.latent_shape,
        prior=f.prior or "normal",
        output_range=_output_range(f.output_range),
        device=device,
    )
    prov = {**loaded.provenance, "prior": gen.prior.to_config(), "output_range": gen.output_range}
    return LoadedGAN(gen, None, None, {"meta": {}, "foreign": prov}, str(ckpt)), prov, loaded.source


def _foreign_discriminator(f: Foreign, device: torch.device) -> tuple[DiscriminatorRatio, dict, str]:
    if f.disc_output is None:
        raise ConfigError(
            f"--disc needs --disc-output: what the discriminator returns ({', '.join(DISCRIMINATOR_OUTPUTS)}); refine does not guess it"
        )
    loaded = load_network(
        f.disc,
        arch=f.disc_arch,
        arch_kwargs=f.disc_arch_kwargs,
        state_key=f.disc_state_key,
        trust_code=f.trust_code,
        device=device,
        role="discriminator",
    )
    ratio = DiscriminatorRatio(loaded.net, f.disc_output, temperature=f.disc_temperature)
    return ratio, {**loaded.provenance, "output": f.disc_output, "temperature": f.disc_temperature}, loaded.source


def load_inputs(
    ckpt: Path | None,
    ratio: Path | None,
    device: torch.device,
    *,
    need_ratio: bool,
    samplers: Sequence = (),
    foreign: Foreign | None = None,
) -> Inputs:
    """Load ``--ckpt`` (default: the shipped 25-Gaussian GAN), ``--ratio`` or ``--disc``.

    Without ``--ratio``/``--disc`` the shipped GAN uses its shipped fitted ratio, and any
    other refine checkpoint uses the discriminator saved in it (recorded as such in
    run.json). A foreign generator or discriminator is checked before any work starts:
    latent size, samples vs the discriminator's input, declared output range, and, for
    each gradient method in ``samplers``, that gradients flow where it needs them.
    """
    f = foreign or Foreign()
    prov: dict = {}
    gen_flags, disc_flags = f.generator_flags(), f.discriminator_flags()
    if f.disc is None and disc_flags:
        raise ConfigError(f"{', '.join(disc_flags)} describe a foreign discriminator: pass its file with --disc")
    if f.disc is not None and ratio is not None:
        raise ConfigError("--disc and --ratio both give the density ratio; pass one of them")
    gen_source = disc_source = None
    if ckpt is None:
        if gen_flags:
            raise ConfigError(f"{', '.join(gen_flags)} describe a foreign generator: pass its file with --ckpt")
        ckpt = pretrained_path(DEFAULT_GAN)
        if ratio is None and f.disc is None:
            ratio = pretrained_path(DEFAULT_RATIO)
        prov["default"] = True
        kind = "refine"
    else:
        kind = "foreign" if f.arch is not None else detect_format(ckpt, what="checkpoint")
    if kind == "refine":
        if gen_flags:
            raise ConfigError(
                f"{ckpt} is a refine checkpoint, which declares its own architecture, prior and output range; drop {', '.join(gen_flags)}"
            )
        gan = load_gan(ckpt, device=device)
        prov["checkpoint"] = {"path": str(ckpt), "sha256": file_sha256(ckpt)}
    else:
        gan, gprov, gen_source = _foreign_generator(ckpt, f, device)
        prov["checkpoint"] = gprov
    r = None
    if ratio is not None:
        r = load_ratio(ratio, device=device)
        prov["ratio"] = {"path": str(ratio), "sha256": file_sha256(ratio)}
    elif f.disc is not None:
        r, dprov, disc_source = _foreign_discriminator(f, device)
        prov["ratio"] = {"discriminator": dprov}
    elif gan.ratio is not None:
        r = gan.ratio
        prov["ratio"] = {
            "source": "discriminator saved in the checkpoint (not fitted to the final generator; see refine fit-ratio)"
        }
    if need_ratio and r is None:
        if kind == "refine":
            raise ConfigError(
                f"{ckpt} holds no discriminator and no --ratio was given; this method needs a density ratio: "
                f"fit one with `refine fit-ratio --ckpt {ckpt} --out ratio.pt` and pass --ratio ratio.pt"
            )
        raise ConfigError(
            f"this method needs a density ratio: pass the generator's discriminator with --disc FILE --disc-output {'|'.join(DISCRIMINATOR_OUTPUTS)} (or --ratio)"
        )
    if r is not None and (kind != "refine" or f.disc is not None or ratio is not None):
        x = check_generator(
            gan.generator, output_range=gan.generator.output_range, source=gen_source, latent_flag="--latent-shape"
        )
        check_pair(gan.generator, r, x=x, source=disc_source)
    for s in samplers:
        if s.needs_gradients and r is not None:
            check_gradients(
                gan.generator,
                r,
                method=s.name,
                source=gen_source,
                ratio_source=disc_source,
                through_generator=gradients_through_generator(s),
            )
    return Inputs(gan, r, prov)
