"""Files refine reads and writes, one module per concern:

:mod:`refine.io.checkpoints`
    refine's own files: GAN checkpoints and ratio files (schema checks, the ratio-kind registry).
:mod:`refine.io.tensorfile`
    the containers those files come in: safetensors with the configuration as JSON metadata
    (for a name ending in ``.safetensors``) or ``torch.save`` read with ``weights_only=True``.
:mod:`refine.io.foreign`
    networks refine did not write: files recognised by content, code-bearing formats only by
    opt-in, state_dicts loaded into an architecture the user names.
:mod:`refine.io.arch`
    ``--arch package.module:factory``: importing and building a user's architecture.
:mod:`refine.io.pretrained`
    the shipped files listed in ``pretrained/manifest.json``.

Atomic writes, sha256 and the checks on files a user names live one layer down, in
:mod:`refine.fs` (the samplers, ratios and run folders use them too); the names are
re-exported here.
"""

from __future__ import annotations

from ..fs import atomic_save, atomic_write, file_sha256, plain, write_json
from . import tensorfile
from .checkpoints import (
    GAN_FORMAT,
    RATIO_FORMAT,
    VERSION,
    LoadedGAN,
    gan_from_dict,
    load_feature_net,
    load_gan,
    load_ratio,
    ratio_kinds,
    register_ratio_loader,
    safe_load,
    save_conditional_discriminator_ratio,
    save_conditional_feature_ratio,
    save_discriminator_ratio,
    save_feature_ratio,
    save_gan,
    save_ratio,
)
from .foreign import (
    FORMATS,
    LoadedNetwork,
    detect_format,
    load_discriminator,
    load_generator,
    load_network,
)
from .pretrained import DEFAULT_GAN, DEFAULT_RATIO, manifest, pretrained_dir, pretrained_path

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
    "tensorfile",
    "atomic_write",
    "atomic_save",
    "file_sha256",
    "write_json",
    "plain",
    "FORMATS",
    "LoadedNetwork",
    "load_network",
    "load_generator",
    "load_discriminator",
    "detect_format",
    "DEFAULT_GAN",
    "DEFAULT_RATIO",
    "manifest",
    "pretrained_dir",
    "pretrained_path",
]
