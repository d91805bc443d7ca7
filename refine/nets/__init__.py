"""Architectures by name: ``build(name, **kwargs)``, ``list_archs()``.

Checkpoints store ``{"name": ..., "kwargs": {...}}`` and a state_dict, so a network
is rebuilt from plain values (no pickled modules). Modules register themselves with
:func:`register_arch`.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..registry import Registry

ARCHS: Registry[Callable[..., nn.Module]] = Registry("architecture", sort=True)


def register_arch(name: str):
    """Decorator: ``@register_arch("mlp")`` makes a network factory buildable by name."""
    return ARCHS.register(name)


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
            raise ConfigError(
                f"unknown argument(s) {', '.join(unknown)} for architecture {name}; valid: {', '.join(params)}"
            )
    return factory(**kwargs)


def planned_state(factory: Callable[..., nn.Module], kwargs: dict) -> dict[str, tuple[tuple[int, ...], int]] | None:
    """``{name: (shape, bytes)}`` of the state a factory would build, found by building it on
    the ``meta`` device (no memory is allocated); ``None`` where the factory cannot build there.

    Used before the real build, so that an absurd width in a checkpoint or on the command line
    is refused with its size instead of exhausting memory."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "initializing zero-element tensors": judged by the caller
            net = factory(**kwargs)
        if not isinstance(net, nn.Module):
            return None
        return {k: (tuple(v.shape), v.numel() * v.element_size()) for k, v in net.state_dict().items()}
    except Exception:  # noqa: BLE001 - a factory that cannot run on meta is built for real, as before
        return None


def arch_config(name: str, **kwargs) -> dict:
    return {"name": name, "kwargs": dict(kwargs)}


def build_from_config(cfg: dict) -> nn.Module:
    name, kwargs = _checked_config(cfg)
    return build(name, **kwargs)


#: The largest integer an architecture's keyword arguments may hold in a stored config
#: (widths, depths, sizes): above any network in use, small enough that planning the
#: network cannot run away.
MAX_ARCH_INT = 2**20


def _plain(value, key: str, depth: int = 0):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_ARCH_INT:
            raise ConfigError(
                f"architecture argument {key}={value} is out of range (at most {MAX_ARCH_INT} in absolute value)"
            )
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, (list, tuple)) and depth < 2 and len(value) <= 64:
        return [_plain(v, key, depth + 1) for v in value]
    raise ConfigError(
        f"architecture argument {key} must be a number, string, bool or a short list of them, got {type(value).__name__}"
    )


def _checked_config(cfg) -> tuple[str, dict]:
    if not isinstance(cfg, dict) or not isinstance(cfg.get("name"), str):
        raise ConfigError(f"architecture config must be {{'name': ..., 'kwargs': {{...}}}}, got {type(cfg).__name__}")
    kwargs = cfg.get("kwargs") or {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ConfigError(
            f"architecture {cfg['name']!r}: kwargs must be a dict of named arguments, got {type(kwargs).__name__}"
        )
    if cfg["name"] not in ARCHS:
        raise ConfigError(f"unknown architecture {cfg['name']!r}; valid: {', '.join(list_archs())}")
    return cfg["name"], {k: _plain(v, k) for k, v in kwargs.items()}


def load_checked(cfg, state, *, path, role: str, memory_limit: int | None = None) -> nn.Module:
    """Build a stored architecture and load its stored weights, refusing a bad entry before
    anything is allocated: a config of the wrong types, a network larger than ``memory_limit``
    bytes, or weights whose names or shapes do not fit it. Errors are one-line
    :class:`~refine.errors.CheckpointError` naming ``path`` and ``role``."""
    try:
        name, kwargs = _checked_config(cfg)
        factory = ARCHS[name]
        params = inspect.signature(factory).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                raise ConfigError(
                    f"unknown argument(s) {', '.join(unknown)} for architecture {name}; valid: {', '.join(params)}"
                )
    except ConfigError as e:
        raise CheckpointError(f"{path}: {role}: {e}") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{path}: the {role} state must be a dict of tensors, got {type(state).__name__}")
    planned = planned_state(factory, kwargs)
    if planned is not None:
        need = sum(b for _, b in planned.values())
        if memory_limit is not None and need > memory_limit:
            raise CheckpointError(
                f"{path}: the {role} ({name} with {kwargs}) would hold {need / 2**30:.3g} GiB of weights, more than fits in memory here"
            )
        empty = [k for k, (shape, _) in planned.items() if 0 in shape]
        if empty:
            raise CheckpointError(
                f"{path}: the {role} ({name} with {kwargs}) has an empty layer ({empty[0]} of shape {list(planned[empty[0]][0])}); every size must be >= 1"
            )
        missing, unexpected = sorted(set(planned) - set(state)), sorted(set(state) - set(planned))
        if missing or unexpected:
            why = "; ".join(
                p
                for p in (
                    f"missing {', '.join(missing[:3])}" if missing else "",
                    f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
                )
                if p
            )
            raise CheckpointError(f"{path}: the {role} weights do not fit its architecture ({why})")
        for k, (shape, _) in planned.items():
            if tuple(state[k].shape) != shape:
                raise CheckpointError(
                    f"{path}: the {role} weights do not fit its architecture ({k} is {list(state[k].shape)} in the file but {list(shape)} in the architecture)"
                )
    try:
        net = factory(**kwargs)
    except (ConfigError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: {role}: building {name} failed ({(str(e).splitlines() or [type(e).__name__])[0][:160]})"
        ) from None
    load_state(net, state, path=path, role=role)
    return net


def load_state(net: nn.Module, state: dict, *, path, role: str, hint: str = "") -> list[str]:
    """``net.load_state_dict(state)`` (strict), its failure one :class:`~refine.errors.CheckpointError`
    line naming the first mismatch (``hint`` appended, e.g. the flag to check). A ``module.``
    prefix left by ``DataParallel`` on every key is removed when no key fits without it.
    Returns notes on what was adapted."""
    notes = []
    own = set(net.state_dict())
    if own and not (set(state) & own) and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
        notes.append("removed the 'module.' prefix (DataParallel)")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        text = str(e)
        missing = re.search(r"Missing key\(s\) in state_dict: ([^.]*\.[^.]*)", text)
        unexpected = re.search(r"Unexpected key\(s\) in state_dict: ([^.]*\.[^.]*)", text)
        size = re.search(
            r"size mismatch for ([^:]+): copying a param with shape torch.Size\((\[[^\]]*\])\) from checkpoint, the shape in current model is torch.Size\((\[[^\]]*\])\)",
            text,
        )
        if size:
            why = f"{size.group(1)} is {size.group(2)} in the file but {size.group(3)} in the architecture"
        else:
            parts = []
            if missing:
                parts.append(f"missing {missing.group(1)[:120]}")
            if unexpected:
                parts.append(f"unexpected {unexpected.group(1)[:120]}")
            why = "; ".join(parts) or (text.splitlines() or [""])[0][:200]
        tail = f"; {hint}" if hint else ""
        raise CheckpointError(f"{path}: the {role} weights do not fit the architecture ({why}){tail}") from None
    return notes


from . import conditional, dcgan, mlp, resnet  # noqa: E402,F401  (registration of the architectures)

__all__ = [
    "ARCHS",
    "register_arch",
    "list_archs",
    "build",
    "arch_config",
    "build_from_config",
    "load_checked",
    "load_state",
    "planned_state",
    "MAX_ARCH_INT",
]
