"""refine's own files: GAN checkpoints and ratio files, safe to load and atomic to write.

A refine checkpoint is a dict of plain values and tensors; nothing in it can run code:

    {"format": "refine.gan", "version": 1,
     "generator": {"arch": {"name": "mlp", "kwargs": {...}}, "state": state_dict,
                   "prior": {"name": "normal", "shape": [2]}, "output_range": "none"},
     "discriminator": {"arch": {...}, "state": state_dict, "output": "logit"} | None,
     "meta": {...}}

A ratio file (``refine fit-ratio``) is ``{"format": "refine.ratio", "version": 1,
"kind": "discriminator", ...}``; this module reads the kinds ``discriminator``,
``discriminator-conditional`` (with one calibration per class), ``feature-sp`` and
``feature-sp-conditional`` (cDR-RS); loaders for other kinds register with :func:`register_ratio_loader`.
Every schema is checked (types, ranges, network sizes against memory) before any network
is built.

The container follows the file name: a path ending in ``.safetensors`` is written as
safetensors with the configuration as JSON in its metadata, any other as ``torch.save``
(refine's format before safetensors). Reading recognises the container from the bytes, so
files of either kind load the same networks (see :mod:`refine.io.tensorfile`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..conditional import (
    LABELS,
    ConditionalDiscriminatorRatio,
    ConditionalFeatureRatio,
    conditional_from_checkpoint,
)
from ..errors import CheckpointError, ConfigError
from ..fs import available_memory, plain
from ..generator import OUTPUT_RANGES, LatentGenerator, make_prior
from ..nets import load_checked
from ..ratio import conditional_feature as _conditional_feature  # noqa: F401  (registers the cond-ratio-head architecture)
from ..ratio.calibration import calibration_from_config
from ..ratio.discriminator import DISCRIMINATOR_OUTPUTS, MIN_TEMPERATURE, DiscriminatorRatio
from ..ratio.feature import ACTIVATIONS, FeatureRatio
from ..registry import Registry
from ..validate import as_float
from . import tensorfile

__all__ = [
    "GAN_FORMAT",
    "RATIO_FORMAT",
    "VERSION",
    "LoadedGAN",
    "save_gan",
    "load_gan",
    "gan_from_dict",
    "save_ratio",
    "load_ratio",
    "save_discriminator_ratio",
    "save_feature_ratio",
    "save_conditional_feature_ratio",
    "save_conditional_discriminator_ratio",
    "load_feature_net",
    "register_ratio_loader",
    "ratio_kinds",
    "safe_load",
]

GAN_FORMAT = "refine.gan"
RATIO_FORMAT = "refine.ratio"
VERSION = 1


# --------------------------------------------------------------------------- reading
def safe_load(path: str | os.PathLike, *, what: str = "checkpoint") -> Any:
    """The contents of a refine file, safetensors or ``torch.save`` (read with ``weights_only=True``),
    with one-line errors for every way reading can fail (see :mod:`refine.io.tensorfile`)."""
    return tensorfile.read(path, what=what)


def _expect(cond: bool, path, msg: str) -> None:
    if not cond:
        raise CheckpointError(f"{path}: {msg}")


def _state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def build_stored(entry: Any, path, role: str, device="cpu") -> nn.Module:
    """A stored network (``{"arch": ..., "state": ...}``) checked before it is built (see
    :func:`refine.nets.load_checked`), in eval mode without gradients, on ``device``."""
    _expect(isinstance(entry, dict) and {"arch", "state"} <= set(entry), path, f"the {role} entry needs arch and state")
    net = load_checked(
        entry.get("arch"), entry.get("state"), path=path, role=role, memory_limit=available_memory() // 2
    )
    return net.eval().requires_grad_(False).to(device)


_KIND = {GAN_FORMAT: "GAN checkpoint", RATIO_FORMAT: "ratio file"}


def _check_schema(ckpt: Any, path, fmt: str) -> dict:
    """The fields every refine file shares: a dict with the format tag, the version, a dict ``meta``."""
    _expect(
        isinstance(ckpt, dict) and ckpt.get("format") == fmt,
        path,
        f"not a refine {_KIND[fmt]} (expected format {fmt!r}; found {ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r})",
    )
    _expect(
        type(ckpt.get("version")) is int and ckpt.get("version") == VERSION,
        path,
        f"unsupported file version {ckpt.get('version')!r} (this refine reads {VERSION})",
    )
    _expect(isinstance(ckpt.get("meta", {}), dict), path, f"meta must be a dict, got {type(ckpt.get('meta')).__name__}")
    _expect(
        isinstance(ckpt.get("extra", {}), dict), path, f"extra must be a dict, got {type(ckpt.get('extra')).__name__}"
    )
    for key in ("dataset", "data"):  # the names refine acts on (a dataset to compare with, real samples to draw)
        value = ckpt.get("meta", {}).get(key)
        _expect(
            value is None or isinstance(value, str),
            path,
            f"meta.{key} must be a dataset name, got {type(value).__name__}",
        )
    return ckpt


# --------------------------------------------------------------------------- GAN checkpoints
@dataclass
class LoadedGAN:
    generator: LatentGenerator
    ratio: DiscriminatorRatio | None
    discriminator: nn.Module | None
    config: dict
    path: str | None = None


def save_gan(
    path: str | os.PathLike,
    *,
    generator: nn.Module,
    generator_arch: dict,
    prior,
    discriminator: nn.Module | None = None,
    discriminator_arch: dict | None = None,
    discriminator_output: str = "logit",
    output_range: str = "none",
    meta: dict | None = None,
    extra: dict | None = None,
    conditional: dict | None = None,
) -> None:
    """Write a GAN checkpoint (plain values and state_dicts only).

    ``conditional={"num_classes": K, "label": "index"}`` marks a class-conditional pair
    ``G(z, y)``, ``D(x, y)``; :func:`load_gan` then returns a
    :class:`refine.conditional.ConditionalGenerator` and its conditional ratio."""
    ckpt = {
        "format": GAN_FORMAT,
        "version": VERSION,
        "generator": {
            "arch": generator_arch,
            "state": _state(generator),
            "prior": plain(prior.to_config()),
            "output_range": output_range,
        },
        "discriminator": None
        if discriminator is None
        else {"arch": discriminator_arch, "state": _state(discriminator), "output": discriminator_output},
        "meta": plain(dict(meta or {})),
    }
    if extra:
        ckpt["extra"] = plain(extra)
    if conditional is not None:
        ckpt["conditional"] = plain(conditional)
    tensorfile.write(ckpt, path)


def gan_from_dict(ckpt: dict, *, device: str | torch.device = "cpu", path=None) -> LoadedGAN:
    """Check a GAN checkpoint's whole schema (types, ranges, sizes against memory), then build it."""
    path = path or "checkpoint"
    _check_schema(ckpt, path, GAN_FORMAT)
    g = ckpt.get("generator")
    _expect(
        isinstance(g, dict) and {"arch", "state", "prior"} <= set(g),
        path,
        "generator entry needs arch, state and prior",
    )
    output_range = g.get("output_range", "none")
    _expect(
        isinstance(output_range, str) and output_range in OUTPUT_RANGES,
        path,
        f"generator output_range must be one of {', '.join(OUTPUT_RANGES)}, got {output_range!r}",
    )
    d = ckpt.get("discriminator")
    _expect(
        d is None or (isinstance(d, dict) and {"arch", "state"} <= set(d)),
        path,
        "discriminator entry must be None or hold arch and state",
    )
    if d is not None:
        out = d.get("output", "logit")
        _expect(
            isinstance(out, str) and out in DISCRIMINATOR_OUTPUTS,
            path,
            f"discriminator output must be one of {', '.join(DISCRIMINATOR_OUTPUTS)}, got {out!r}",
        )
    try:
        prior = make_prior(g["prior"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: generator prior: {e}") from None
    gnet = build_stored(g, path, "generator", device)
    generator = LatentGenerator(gnet, prior, output_range=output_range)
    dnet = ratio = None
    if d is not None:
        dnet = build_stored(d, path, "discriminator", device)
        ratio = DiscriminatorRatio(dnet, d.get("output", "logit"))
    if ckpt.get("conditional") is not None:
        generator, ratio = conditional_from_checkpoint(
            ckpt["conditional"], gnet, prior, output_range, dnet, d.get("output", "logit") if d else None, path
        )
    return LoadedGAN(generator, ratio, dnet, ckpt, str(path))


def load_gan(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedGAN:
    """Load a refine GAN checkpoint onto ``device``; networks come back in eval mode without grad."""
    return gan_from_dict(safe_load(path), device=device, path=str(path))


# --------------------------------------------------------------------------- ratio files
_RATIO_LOADERS: Registry[Callable[[dict, Any, str], Any]] = Registry("ratio kind", sort=True)


def register_ratio_loader(kind: str):
    """Decorator: ``@register_ratio_loader("feature-sp")`` teaches :func:`load_ratio` a ratio kind."""
    return _RATIO_LOADERS.register(kind)


def ratio_kinds() -> list[str]:
    """The ratio kinds :func:`load_ratio` reads."""
    return sorted(_RATIO_LOADERS)


def save_ratio(path: str | os.PathLike, *, kind: str, payload: dict, meta: dict | None = None) -> None:
    tensorfile.write(
        {"format": RATIO_FORMAT, "version": VERSION, "kind": kind, **plain(payload), "meta": plain(dict(meta or {}))},
        path,
    )


def load_ratio(path: str | os.PathLike, *, device: str | torch.device = "cpu"):
    """Load a ratio saved by ``refine fit-ratio`` (any registered kind)."""
    obj = safe_load(path, what="ratio file")
    _check_schema(obj, path, RATIO_FORMAT)
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in _RATIO_LOADERS:
        raise CheckpointError(f"{path}: unknown ratio kind {kind!r}; known kinds: {', '.join(ratio_kinds())}")
    return _RATIO_LOADERS[kind](obj, device, str(path))


# kind "discriminator": a discriminator with its output convention, temperature and calibration
def save_discriminator_ratio(path, ratio: DiscriminatorRatio, arch: dict, *, meta: dict | None = None) -> None:
    payload = {
        "arch": arch,
        "state": _state(ratio.net),
        "output": ratio.output,
        "temperature": ratio.temperature,
        "calibration": ratio.calibration.to_config() if ratio.calibration is not None else None,
    }
    save_ratio(path, kind="discriminator", payload=payload, meta=meta)


def _calibration(cfg, path: str, what: str = "calibration"):
    _expect(cfg is None or isinstance(cfg, dict), path, f"{what} must be None or a dict, got {type(cfg).__name__}")
    try:
        return calibration_from_config(cfg)
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {what}: {e}") from None


def _output_and_temperature(obj: dict, path: str) -> tuple[str, float]:
    out = obj.get("output", "logit")
    _expect(
        isinstance(out, str) and out in DISCRIMINATOR_OUTPUTS,
        path,
        f"output must be one of {', '.join(DISCRIMINATOR_OUTPUTS)}, got {out!r}",
    )
    try:  # the rule DiscriminatorRatio applies, refused here as a damaged file
        temperature = as_float(obj.get("temperature", 1.0), "temperature", minimum=MIN_TEMPERATURE)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return out, temperature


@register_ratio_loader("discriminator")
def _load_discriminator_ratio(obj: dict, device, path: str) -> DiscriminatorRatio:
    out, temperature = _output_and_temperature(obj, path)
    cal = _calibration(obj.get("calibration"), path)
    net = build_stored(obj, path, "discriminator", device)
    return DiscriminatorRatio(net, out, temperature=temperature, calibration=cal)


def _num_classes(obj: dict, path: str) -> int:
    k = obj.get("num_classes")
    _expect(type(k) is int and 1 <= k <= 100_000, path, f"num_classes must be an integer in [1, 100000], got {k!r:.60}")
    return k


# kind "discriminator-conditional": a conditional discriminator D(x, y), with one calibration per class
def save_conditional_discriminator_ratio(
    path, ratio: ConditionalDiscriminatorRatio, arch: dict, *, meta: dict | None = None
) -> None:
    """Write a ``discriminator-conditional`` ratio file: the network with its architecture config,
    the number of classes, how it takes the label, its output convention, temperature and the
    per-class calibrations (or None)."""
    payload = {
        "arch": arch,
        "state": _state(ratio.net),
        "num_classes": ratio.num_classes,
        "label": ratio.label,
        "output": ratio.output,
        "temperature": ratio.temperature,
        "calibration": None if ratio.calibration is None else [c.to_config() for c in ratio.calibration],
    }
    save_ratio(path, kind="discriminator-conditional", payload=payload, meta=meta)


@register_ratio_loader("discriminator-conditional")
def _load_conditional_discriminator_ratio(obj: dict, device, path: str) -> ConditionalDiscriminatorRatio:
    k = _num_classes(obj, path)
    label = obj.get("label", "index")
    _expect(
        isinstance(label, str) and label in LABELS, path, f"label must be one of {', '.join(LABELS)}, got {label!r:.60}"
    )
    out, temperature = _output_and_temperature(obj, path)
    cals = obj.get("calibration")
    _expect(
        cals is None or (isinstance(cals, list) and len(cals) == k),
        path,
        f"calibration must be None or a list of one map per class ({k}), got {type(cals).__name__}",
    )
    cal = None if cals is None else [_calibration(c, path, f"calibration of class {i}") for i, c in enumerate(cals)]
    _expect(cal is None or all(c is not None for c in cal), path, "every class needs a calibration map")
    net = build_stored(obj, path, "conditional discriminator", device)
    return ConditionalDiscriminatorRatio(net, k, out, label=label, temperature=temperature, calibration=cal)


# kind "feature-sp": DRE-F-SP's frozen feature network and ratio head (see refine.ratio.feature)
def save_feature_ratio(
    path, ratio: FeatureRatio, *, feature_arch: dict, head_arch: dict, meta: dict | None = None
) -> None:
    """Write a ``feature-sp`` ratio file (both networks as state_dicts with their architecture configs)."""
    if feature_arch is None:
        raise ConfigError("saving a DRE-F-SP ratio needs the feature network's architecture config")
    payload = {
        "feature_net": {"arch": feature_arch, "state": _state(ratio.feature_net)},
        "head": {"arch": head_arch, "state": _state(ratio.head)},
        "activation": ratio.activation,
        "image_size": ratio.image_size,
    }
    save_ratio(path, kind="feature-sp", payload=payload, meta=meta)


def load_feature_net(path, *, device="cpu") -> tuple[nn.Module, dict]:
    """The (frozen) feature network of a ``feature-sp`` (or ``feature-sp-conditional``) ratio file and its
    architecture config, to reuse it."""
    obj = safe_load(path, what="ratio file")
    if not isinstance(obj, dict) or obj.get("kind") not in ("feature-sp", "feature-sp-conditional"):
        raise CheckpointError(
            f"{path} is not a feature-sp ratio file (kind {obj.get('kind') if isinstance(obj, dict) else None!r}); "
            "pass a file written by `refine fit-ratio --kind feature-sp`"
        )
    net = build_stored(obj.get("feature_net"), str(path), "feature network", device)
    return net, obj["feature_net"]["arch"]


@register_ratio_loader("feature-sp")
def _load_feature_ratio(obj: dict, device, path: str) -> FeatureRatio:
    fnet = build_stored(obj.get("feature_net"), path, "feature network", device)
    head = build_stored(obj.get("head"), path, "ratio head", device)
    try:
        return FeatureRatio(fnet, head, activation=obj.get("activation", "softplus"), image_size=obj.get("image_size"))
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


# kind "feature-sp-conditional": cDR-RS's frozen feature network and one conditional head (see refine.ratio.conditional_feature)
def save_conditional_feature_ratio(
    path, ratio: ConditionalFeatureRatio, *, feature_arch: dict, head_arch: dict, meta: dict | None = None
) -> None:
    """Write a ``feature-sp-conditional`` ratio file: both networks as state_dicts with their
    architecture configs, the number of classes, the activation and the feature network's image size."""
    if feature_arch is None:
        raise ConfigError("saving a conditional DRE-F-SP ratio needs the feature network's architecture config")
    payload = {
        "feature_net": {"arch": feature_arch, "state": _state(ratio.feature_net)},
        "head": {"arch": head_arch, "state": _state(ratio.head)},
        "num_classes": ratio.num_classes,
        "activation": ratio.activation,
        "image_size": ratio.image_size,
    }
    save_ratio(path, kind="feature-sp-conditional", payload=payload, meta=meta)


@register_ratio_loader("feature-sp-conditional")
def _load_conditional_feature_ratio(obj: dict, device, path: str) -> ConditionalFeatureRatio:
    k = _num_classes(obj, path)
    activation = obj.get("activation", "softplus")
    _expect(
        isinstance(activation, str) and activation in ACTIVATIONS,
        path,
        f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r:.60}",
    )
    size = obj.get("image_size")
    _expect(
        size is None or (type(size) is int and 1 <= size <= 4096),
        path,
        f"image_size must be None or an integer in [1, 4096], got {size!r:.60}",
    )
    head_entry = obj.get("head")
    _expect(
        isinstance(head_entry, dict)
        and isinstance(head_entry.get("arch"), dict)
        and head_entry["arch"].get("name") == "cond-ratio-head",
        path,
        "the head entry must hold a cond-ratio-head architecture",
    )
    fnet = build_stored(obj.get("feature_net"), path, "feature network", device)
    head = build_stored(head_entry, path, "conditional ratio head", device)
    try:
        return ConditionalFeatureRatio(fnet, head, k, activation=activation, image_size=size)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
