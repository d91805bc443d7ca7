"""Shipped checkpoints, listed in ``pretrained/manifest.json``.

The folder is found through ``$REFINE_PRETRAINED`` or next to the package (a source
checkout or editable install). Files are checked against the manifest's sha256.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import CheckpointError, ConfigError
from ..fs import file_sha256

__all__ = ["pretrained_dir", "manifest", "pretrained_path", "DEFAULT_GAN", "DEFAULT_RATIO"]

DEFAULT_GAN = "toy2d-grid25-gan"
DEFAULT_RATIO = "toy2d-grid25-ratio"


def pretrained_dir() -> Path:
    env = os.environ.get("REFINE_PRETRAINED")
    d = Path(env) if env else Path(__file__).resolve().parents[2] / "pretrained"
    if not (d / "manifest.json").is_file():
        raise CheckpointError(
            f"no shipped checkpoints found at {d} (expected manifest.json); set REFINE_PRETRAINED to the repository's pretrained/ folder, or pass --ckpt"
        )
    return d


def manifest() -> dict:
    with open(pretrained_dir() / "manifest.json") as f:
        return json.load(f)


def pretrained_path(name: str, *, verify: bool = True) -> Path:
    m = manifest()
    entries = {e["name"]: e for e in m["checkpoints"]}
    if name not in entries:
        raise ConfigError(f"unknown pretrained checkpoint {name!r}; shipped: {', '.join(entries)}")
    e = entries[name]
    p = pretrained_dir() / e["file"]
    if verify:
        if not p.is_file():
            raise CheckpointError(f"shipped checkpoint {p} is missing")
        got = file_sha256(p)
        if got != e["sha256"]:
            raise CheckpointError(
                f"shipped checkpoint {p} has sha256 {got[:12]}..., the manifest says {e['sha256'][:12]}...; it was modified or corrupted"
            )
    return p
