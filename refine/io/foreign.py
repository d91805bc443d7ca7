"""Networks refine did not write: load them safely, wrap them, and check that they fit.

A foreign generator or discriminator reaches refine by one of four routes. The file
is read once into memory; its kind is recognised from its content, not its name:

``state_dict`` + architecture (the safe route)
    ``arch="package.module:factory"`` (or ``path/to/file.py:factory``, a refine
    architecture name such as ``mlp``, or in Python any callable that returns an
    ``nn.Module``) with ``arch_kwargs``; the weights are a ``torch.save`` file read with
    ``torch.load(weights_only=True)`` or a safetensors file. A file that holds several
    state_dicts (``{"netG": ..., "netD": ...}``) takes ``state_key="netG"``; a ``module.``
    prefix left by ``DataParallel`` is removed. The architecture is code the user
    already trusts and names; the file holds only tensors.
TorchScript (``torch.jit.save``), ``torch.export`` program (``torch.export.save``, ``.pt2``)
    These carry code: TorchScript runs inside PyTorch's interpreter, including at load
    time (a module's ``__setstate__``); ``torch.export.load`` unpickles with
    ``weights_only=False`` and evaluates guard code. They are treated as pickles are:
    refused unless the user opts in with ``trust_code=True`` (``--trust-code``). No
    inspection of the code is attempted: a list of forbidden spellings can never be
    complete. A program exported with a fixed batch size is called in chunks of that size.
whole-module pickle (``torch.save(model)``)
    Refused: unpickling runs arbitrary code. ``trust_code=True`` (``--trust-code``)
    loads it for a file whose source you trust.

So a file never runs code by default: the one opt-in, ``trust_code``, covers every
code-bearing format. What the user names (``--arch``) is their own code and is
imported as such. (``allow_pickle``/``--allow-pickle`` is the old name of the opt-in.)

The architecture route's factory import and build live in :mod:`refine.io.arch`; recognising and
reading the files, in :mod:`refine.io.foreign_files`. After loading, :mod:`refine.checks` turns
the usual mismatches into one line each (a latent size the network's first layer does not take,
generator samples the discriminator does not take, images without a declared output range, a
network gradients do not flow through).
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checks import check_generator, first_layer
from ..errors import CheckpointError, ConfigError, ShapeError
from ..fs import read_regular_file
from ..generator import OUTPUT_RANGES, LatentGenerator, Prior, make_prior
from ..nets import load_state
from ..ratio.discriminator import DiscriminatorRatio
from .arch import build_arch, parse_kwargs
from .foreign_files import (
    CODE_FORMATS,
    FORMATS,
    OPT_IN,
    SAFE_ROUTE,
    FixedBatch,
    code_opt_in,
    detect_format,
    export_input,
    extract_state_dict,
    load_safetensors,
    sniff,
    torch_load,
)

__all__ = [
    "FORMATS",
    "CODE_FORMATS",
    "LoadedNetwork",
    "load_network",
    "load_generator",
    "load_discriminator",
    "generator_from_loaded",
    "detect_format",
    "extract_state_dict",
    "parse_latent_shape",
    "parse_prior",
]


# --------------------------------------------------------------------------- loading
@dataclass
class LoadedNetwork:
    """A network from a foreign file: ``net`` (callable), its ``format``, and what produced it."""

    net: Callable[[torch.Tensor], torch.Tensor]
    format: str
    source: str
    input_shape: tuple | None = None  #: (batch, *rest) for a torch.export program; None where the file does not say
    provenance: dict = field(default_factory=dict)


def flag_prefix_of(role: str) -> str:
    return "--disc-" if role == "discriminator" else "--"


def _code_refused(kind: str, path, what: str) -> CheckpointError:
    name = {
        "torchscript": "a TorchScript archive",
        "export": "a torch.export program",
        "pickle": "a pickle of Python objects",
    }[kind]
    return CheckpointError(
        f"{what} {path} is {name}, which carries code; refine runs no code from a file by default; {SAFE_ROUTE}; or {OPT_IN}"
    )


def load_network(
    path: str | Path | None,
    *,
    arch: str | Callable | None = None,
    arch_kwargs: dict | str | None = None,
    state_key: str | None = None,
    trust_code: bool = False,
    allow_pickle: bool | None = None,
    device: str | torch.device = "cpu",
    role: str = "generator",
) -> LoadedNetwork:
    """Load a network by any of the routes in the module docs. Returned networks are in eval
    mode with ``requires_grad=False`` parameters (they are refine's own copies).

    ``trust_code=True`` is the one opt-in for the formats that carry code (TorchScript,
    ``torch.export`` programs, whole-module pickles); ``allow_pickle`` is its old name."""
    trust = code_opt_in(trust_code, allow_pickle)
    device = torch.device(device)
    what = role
    if path is None:
        if arch is not None:
            flag = "--disc" if role == "discriminator" else "--ckpt"
            raise ConfigError(f"the {role} architecture needs its weights: pass the state_dict file with {flag}")
        raise ConfigError(f"no {role} file given")
    data = read_regular_file(path, what)
    prov: dict = {"path": str(path), "sha256": hashlib.sha256(data).hexdigest()}
    kind = sniff(data)
    if kind == "refine":  # a safetensors file refine wrote
        if arch is not None:
            raise ConfigError(
                f"{what} {path} is a refine checkpoint, which names its own architecture; drop {flag_prefix_of(role)}arch"
            )
        raise ConfigError(
            f"{what} {path} is a refine checkpoint; load it with refine.load_gan (CLI: --ckpt without foreign options)"
        )
    if kind == "unknown":
        raise CheckpointError(
            f"{what} {path} is not a file written by torch.save, safetensors, torch.jit.save or torch.export.save"
        )
    flag_prefix = flag_prefix_of(role)
    if arch is not None:
        if kind in ("torchscript", "export"):
            raise ConfigError(
                f"{what} {path} is a {'TorchScript file' if kind == 'torchscript' else 'torch.export program'}, which holds its own architecture; drop {flag_prefix}arch"
            )
        if kind == "safetensors":
            if state_key:
                raise ConfigError(
                    f"{flag_prefix}state-key applies to a file of several state_dicts; {path} is one safetensors state_dict"
                )
            state = load_safetensors(data, path, what)
        else:
            obj = torch_load(data, path, what, allow_pickle=trust)
            if isinstance(obj, dict) and obj.get("format") == "refine.gan":
                raise ConfigError(
                    f"{what} {path} is a refine checkpoint, which names its own architecture; drop {flag_prefix}arch"
                )
            state = extract_state_dict(obj, state_key, path, role)
        net = build_arch(arch, arch_kwargs, role=role, weights=state, weights_path=path)
        notes = load_state(net, state, path=path, role=role, hint=f"check {flag_prefix}arch/{flag_prefix}arch-kwargs")
        net.eval().requires_grad_(False).to(device)
        prov.update(
            format=kind if kind == "safetensors" else "state_dict",
            arch=arch if isinstance(arch, str) else getattr(arch, "__qualname__", repr(arch)),
            arch_kwargs=parse_kwargs(arch_kwargs),
        )
        if state_key:
            prov["state_key"] = state_key
        if notes:
            prov["notes"] = notes
        return LoadedNetwork(
            net, "state_dict", f"{role} {path} ({prov['format']}, architecture {prov['arch']})", None, prov
        )
    if arch_kwargs:
        raise ConfigError(f"{flag_prefix}arch-kwargs needs {flag_prefix}arch")
    if state_key and kind != "torch":
        raise ConfigError(f"{flag_prefix}state-key applies to a file of state_dicts; {path} is a {kind} file")
    if kind == "safetensors":
        raise ConfigError(
            f"{what} {path} is a safetensors state_dict (weights without an architecture); pass {flag_prefix}arch package.module:factory (and {flag_prefix}arch-kwargs JSON) to build the network it belongs to"
        )
    if kind in ("torchscript", "export") and not trust:
        raise _code_refused(kind, path, what)
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(io.BytesIO(data), map_location=device)
        except Exception as e:  # noqa: BLE001 - torch raises RuntimeError and friends for bad archives
            raise CheckpointError(
                f"{what} {path}: torch.jit.load failed ({(str(e).strip().splitlines() or [type(e).__name__])[0][:160]})"
            ) from None
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        prov["format"] = "torchscript"
        return LoadedNetwork(net, "torchscript", f"{role} {path} (TorchScript, loaded with --trust-code)", None, prov)
    if kind == "export":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ep = torch.export.load(io.BytesIO(data))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"{what} {path}: torch.export.load failed ({(str(e).strip().splitlines() or [type(e).__name__])[0][:160]})"
            ) from None
        shape = export_input(ep)
        net = ep.module()
        for p in net.parameters():
            p.requires_grad_(False)
        if device.type != "cpu":
            try:
                net = net.to(device)
            except Exception as e:  # noqa: BLE001
                raise ConfigError(
                    f"{what} {path}: the torch.export program cannot move to {device} ({str(e)[:120]}); export it on that device"
                ) from None
        if shape is None:
            raise ShapeError(
                f"{what} {path} is a torch.export program that does not take exactly one tensor; refine calls it with one latent batch"
            )
        dims, fixed = shape
        if fixed:
            net = FixedBatch(net, dims[0])
        prov.update(
            format="export",
            input_shape=[d if d is not None else "N" for d in dims],
            fixed_batch=dims[0] if fixed else None,
        )
        return LoadedNetwork(
            net, "export", f"{role} {path} (torch.export program, loaded with --trust-code)", dims, prov
        )
    # a torch.save file without an architecture
    obj = torch_load(data, path, what, allow_pickle=trust)
    if isinstance(obj, dict) and obj.get("format") == "refine.gan":
        raise ConfigError(
            f"{what} {path} is a refine checkpoint; load it with refine.load_gan (CLI: --ckpt without foreign options)"
        )
    if isinstance(obj, dict):
        raise ConfigError(
            f"{what} {path} holds a state_dict (weights without an architecture); pass {flag_prefix}arch package.module:factory (and {flag_prefix}arch-kwargs JSON) to build the network it belongs to"
        )
    if isinstance(obj, nn.Module):
        obj.eval().requires_grad_(False).to(device)
    elif not callable(obj):
        raise CheckpointError(
            f"{what} {path} holds a {type(obj).__name__}, which is neither a network nor a state_dict"
        )
    prov["format"] = "pickle"
    return LoadedNetwork(
        obj, "pickle", f"{role} {path} (pickled {type(obj).__name__}, loaded with --trust-code)", None, prov
    )


# --------------------------------------------------------------------------- parsing the CLI's declarations
def parse_latent_shape(text: str | int | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"100"``, ``"100,1,1"``, ``"100x1x1"`` or ``(100, 1, 1)`` -> a tuple of positive ints."""
    if text is None or text == "":
        return None
    if isinstance(text, int):
        parts = [text]
    elif isinstance(text, str):
        try:
            parts = [int(p) for p in re.split(r"[,x× ]+", text.strip().strip("()[]")) if p]
        except ValueError:
            raise ConfigError(
                f"--latent-shape {text!r} is not a list of sizes; write e.g. --latent-shape 100 or --latent-shape 100,1,1"
            ) from None
    else:
        parts = [int(p) for p in text]
    if not parts or any(p <= 0 for p in parts):
        raise ConfigError(f"--latent-shape must be positive sizes, got {text!r}")
    return tuple(parts)


def parse_prior(spec: str | dict | Prior, shape: tuple[int, ...]) -> Prior:
    """``"normal"``, ``"uniform"`` (on [-1, 1]), ``'{"name": "uniform", "low": 0, "high": 1}'`` or a Prior."""
    if isinstance(spec, Prior):
        if tuple(spec.shape) != tuple(shape):
            raise ShapeError(f"the prior's shape {spec.shape} disagrees with the latent shape {tuple(shape)}")
        return spec
    if isinstance(spec, str) and spec.strip().startswith("{"):
        spec = parse_kwargs(spec, "--prior")
    if isinstance(spec, dict):
        cfg = dict(spec)
        if "shape" in cfg and tuple(cfg["shape"]) != tuple(shape):
            raise ShapeError(f"--prior shape {tuple(cfg['shape'])} disagrees with --latent-shape {tuple(shape)}")
        cfg["shape"] = list(shape)
        return make_prior(cfg)
    return make_prior(str(spec), shape)


# --------------------------------------------------------------------------- one call per role
def load_generator(
    path: str | Path,
    *,
    latent_shape: Sequence[int] | int | str | None = None,
    prior: str | dict | Prior = "normal",
    output_range: str | None = None,
    arch: str | Callable | None = None,
    arch_kwargs: dict | str | None = None,
    state_key: str | None = None,
    trust_code: bool = False,
    allow_pickle: bool | None = None,
    device: str | torch.device = "cpu",
) -> LatentGenerator:
    """Load a foreign generator file (any route) as a checked :class:`LatentGenerator`.

    ``latent_shape`` is required except for a ``torch.export`` program, whose input
    shape is read from the program. ``output_range`` must be declared for images.
    """
    loaded = load_network(
        path,
        arch=arch,
        arch_kwargs=arch_kwargs,
        state_key=state_key,
        trust_code=code_opt_in(trust_code, allow_pickle),
        device=device,
        role="generator",
    )
    return generator_from_loaded(
        loaded, latent_shape=latent_shape, prior=prior, output_range=output_range, device=device
    )


def generator_from_loaded(
    loaded: LoadedNetwork, *, latent_shape=None, prior="normal", output_range=None, device="cpu"
) -> LatentGenerator:
    shape = parse_latent_shape(latent_shape) if not isinstance(latent_shape, tuple) else latent_shape
    if loaded.input_shape is not None:
        rest = loaded.input_shape[1:]
        if any(d is None for d in rest):
            if shape is None:
                raise ConfigError(
                    f"{loaded.source} takes inputs with symbolic sizes {loaded.input_shape}; pass --latent-shape"
                )
        else:
            if shape is not None and tuple(shape) != tuple(rest):
                raise ShapeError(
                    f"--latent-shape {','.join(map(str, shape))} disagrees with {loaded.source}, which takes latents of shape (N, {', '.join(map(str, rest))})"
                )
            shape = tuple(rest)
    if shape is None:
        layer = first_layer(loaded.net)
        hint = f" (its first layer is {layer})" if layer else ""
        raise ConfigError(
            f"{loaded.source} needs its latent shape{hint}: pass --latent-shape, e.g. 100 or 100,1,1 (Python: latent_shape=)"
        )
    if output_range is not None and output_range not in OUTPUT_RANGES:
        raise ConfigError(f"unknown output range {output_range!r}; valid: {', '.join(OUTPUT_RANGES)}")
    p = parse_prior(prior, shape)
    gen = LatentGenerator(loaded.net, p, output_range=output_range or "none", device=device)
    check_generator(gen, output_range=output_range, source=loaded.source, latent_flag="--latent-shape")
    return gen


def load_discriminator(
    path: str | Path,
    *,
    output: str,
    temperature: float = 1.0,
    arch: str | Callable | None = None,
    arch_kwargs: dict | str | None = None,
    state_key: str | None = None,
    trust_code: bool = False,
    allow_pickle: bool | None = None,
    device: str | torch.device = "cpu",
):
    """Load a foreign discriminator file (any route) as a :class:`DiscriminatorRatio`.

    ``output`` says what it returns: ``"logit"``, ``"prob"`` or ``"critic"`` (declared, never guessed).
    """
    loaded = load_network(
        path,
        arch=arch,
        arch_kwargs=arch_kwargs,
        state_key=state_key,
        trust_code=code_opt_in(trust_code, allow_pickle),
        device=device,
        role="discriminator",
    )
    return DiscriminatorRatio(loaded.net, output, temperature=temperature)
