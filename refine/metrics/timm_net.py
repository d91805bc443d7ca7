"""Any timm network as a feature extractor, with weights from a local file only.

``--features timm:NAME --features-weights PATH`` scores samples in the pooled (pre-logits)
features of the timm model ``NAME`` (for instance ``vit_small_patch14_dinov2.lvd142m`` for the
DINOv2 space of dgm-eval and torchmetrics' FD-DINOv2). The model is built with
``pretrained=False`` and ``num_classes=0``, so timm never reaches a hub, and its weights come
from ``PATH``: a safetensors file or a ``torch.save``\\ d state_dict (read with
``weights_only=True``). A classifier head in the file is dropped; any other missing or extra
key is an error, so a wrong file cannot silently leave layers at their random initialisation.

Preprocessing follows the model's own data config (timm's ``resolve_model_data_config``):
8-bit images are scaled to [0, 1], grey images repeated to 3 channels, resized to the model's
input size with its interpolation (antialiased, no crop: the whole sample is scored) and
normalised with its mean and std.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError, ShapeError
from ..fs import read_regular_file

__all__ = ["TIMM_PREFIX", "is_timm_spec", "timm_name", "load_timm_weights", "build_timm_features"]

TIMM_PREFIX = "timm:"


def is_timm_spec(features: str | os.PathLike) -> bool:
    return str(features).strip().lower().startswith(TIMM_PREFIX)


def timm_name(features: str) -> str:
    name = str(features).strip()[len(TIMM_PREFIX) :].strip()
    if not name:
        raise ConfigError(
            f"--features {features!r} names no timm model; write timm:NAME, e.g. timm:vit_small_patch14_dinov2.lvd142m"
        )
    return name


def load_timm_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """``(state_dict, sha256)`` of a safetensors or ``torch.save`` file (no code is run, nothing is downloaded)."""
    p = Path(path)
    data = read_regular_file(p, "feature weights file")
    sha = hashlib.sha256(data).hexdigest()
    if len(data) > 10 and data[8:9] == b"{":  # safetensors: 8-byte header length, then a JSON header
        from safetensors import SafetensorError
        from safetensors.torch import load as st_load

        try:
            state = st_load(data)
        except (SafetensorError, ValueError, RuntimeError, OSError) as e:
            raise CheckpointError(
                f"feature weights file {p} is not a valid safetensors file ({str(e).splitlines()[0][:160]})"
            ) from None
    else:
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure means an unusable file
            first = (str(e).splitlines() or [type(e).__name__])[0][:160]
            raise CheckpointError(
                f"feature weights file {p} is neither safetensors nor a state_dict torch.load(weights_only=True) reads ({first}); "
                "save it with safetensors.torch.save_file(model.state_dict(), PATH)"
            ) from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"feature weights file {p} does not hold a state_dict (a mapping of names to tensors)")
    return state, sha


def _drop_head(
    state: dict[str, torch.Tensor], head: str | tuple | list | None, model_keys: set[str]
) -> dict[str, torch.Tensor]:
    heads = [head] if isinstance(head, str) else list(head or [])
    return {
        k: v for k, v in state.items() if k in model_keys or not any(k == h or k.startswith(h + ".") for h in heads)
    }


def _transform(cfg: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    channels, h, w = (int(v) for v in cfg["input_size"])
    mode = "bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear"
    mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, -1, 1, 1)

    def transform(x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0
        if x.shape[1] != channels:
            if x.shape[1] == 1:
                x = x.expand(-1, channels, -1, -1)
            else:
                raise ShapeError(f"the timm model takes {channels}-channel images; got {x.shape[1]} channels")
        if tuple(x.shape[-2:]) != (h, w):
            x = F.interpolate(x, size=(h, w), mode=mode, align_corners=False, antialias=True)
        return (x - mean.to(x.device)) / std.to(x.device)

    return transform


def build_timm_features(
    name: str, weights: str | os.PathLike, *, device: torch.device | str = "cpu"
) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor], dict]:
    """``(network, transform, info)`` for ``timm.create_model(name)``'s pooled features with the weights at ``weights``."""
    import timm

    state, sha = load_timm_weights(weights)
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as e:  # timm's "Unknown model"
        near = timm.list_models(f"*{name.split('.')[0][:12]}*")[:5]
        hint = f" (similar: {', '.join(near)})" if near else ""
        raise ConfigError(f"timm has no model {name!r}{hint}: {str(e).splitlines()[0][:120]}") from None
    keys = set(model.state_dict())
    state = _drop_head(state, model.pretrained_cfg.get("classifier"), keys)
    missing, unexpected = sorted(keys - set(state)), sorted(set(state) - keys)
    if missing or unexpected:
        raise CheckpointError(
            f"feature weights {weights} do not fit timm model {name} (missing {len(missing)} keys e.g. {missing[:2]}, "
            f"unexpected {len(unexpected)} e.g. {unexpected[:2]}); pass the weights of that model"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"feature weights {weights} do not fit timm model {name} ({str(e).splitlines()[1 if len(str(e).splitlines()) > 1 else 0].strip()[:160]})"
        ) from None
    model = model.eval().requires_grad_(False).to(device)
    cfg = timm.data.resolve_model_data_config(model)
    info = {
        "timm_model": name,
        "timm_version": timm.__version__,
        "weights": str(weights),
        "sha256": sha,
        "feature_dim": int(model.num_features),
        "input_size": list(cfg["input_size"]),
        "interpolation": cfg.get("interpolation"),
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
    }
    return model, _transform(cfg), info
