"""Architectures by name: ``build(name, **kwargs)``, ``list_archs()``.

Checkpoints store ``{"name": ..., "kwargs": {...}}`` and a state_dict, so a network
is rebuilt from plain values (no pickled modules). Modules register themselves with
:func:`register_arch`.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError

ARCHS: dict[str, Callable[..., nn.Module]] = {}


def register_arch(name: str):
    def deco(factory):
        if name in ARCHS:
            raise ValueError(f"architecture {name!r} registered twice")
        ARCHS[name] = factory
        return factory

    return deco


def list_archs() -> list[str]:
    return sorted(ARCHS)


def build(name: str, **kwargs) -> nn.Module:
    """Build a registered architecture; unknown names or keyword arguments are errors."""
    if name not in ARCHS:
        raise ConfigError(f"unknown architecture {name!r}; valid: {', '.join(list_archs())}")
    factory = ARCHS[name]
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ConfigError(f"unknown argument(s) {', '.join(unknown)} for architecture {name}; valid: {', '.join(params)}")
    return factory(**kwargs)


def planned_state(factory: Callable[..., nn.Module], kwargs: dict) -> dict[str, tuple[tuple[int, ...], int]] | None:
    """``{name: (shape, bytes)}`` of the state a factory would build, found by building it on
    the ``meta`` device (no memory is allocated); ``None`` where the factory cannot build there.

    Used before the real build, so that an absurd width in a checkpoint or on the command line
    is refused with its size instead of exhausting memory."""
    try:
        with torch.device("meta"):
            net = factory(**kwargs)
        if not isinstance(net, nn.Module):
            return None
        return {k: (tuple(v.shape), v.numel() * v.element_size()) for k, v in net.state_dict().items()}
    except Exception:  # noqa: BLE001 - a factory that cannot run on meta is built for real, as before
        return None


def arch_config(name: str, **kwargs) -> dict:
    return {"name": name, "kwargs": dict(kwargs)}


def build_from_config(cfg: dict) -> nn.Module:
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise ConfigError(f"architecture config must be {{'name': ..., 'kwargs': {{...}}}}, got {cfg!r}")
    return build(cfg["name"], **dict(cfg.get("kwargs") or {}))


from . import mlp  # noqa: E402,F401  (registration)
from . import dcgan, resnet  # noqa: E402,F401  (registration: image networks)

__all__ = ["ARCHS", "register_arch", "list_archs", "build", "arch_config", "build_from_config"]
