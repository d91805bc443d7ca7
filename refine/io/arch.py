"""Architectures a user names: ``--arch package.module:factory`` (or ``file.py:factory``, a
refine architecture name, or in Python any callable returning an ``nn.Module``) with its
keyword arguments (``--arch-kwargs`` JSON), built once on the ``meta`` device first so that a
network larger than memory, or one whose shapes disagree with the weights, is refused
before anything is allocated.

The architecture is the user's own code and is imported as such; files never name code
(see :mod:`refine.io.foreign`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, RefineError
from ..fs import available_memory, format_bytes
from ..nets import ARCHS, list_archs, planned_state

__all__ = ["parse_kwargs", "import_factory", "build_arch", "check_planned_size"]


def parse_kwargs(text: str | dict | None, flag: str = "--arch-kwargs") -> dict:
    """``'{"nz": 100}'`` -> ``{"nz": 100}``; a dict passes through."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        return dict(text)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{flag} {text!r} is not JSON ({e.msg} at character {e.pos}); write e.g. {flag} '{{\"nz\": 100}}'"
        ) from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{flag} must be a JSON object of keyword arguments, got {type(obj).__name__}: {text!r}")
    return obj


def _import_module(modname: str, spec: str):
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as e:
        # the `refine` console script does not put the working directory on sys.path; `python -m refine` does
        cwd = str(Path.cwd())
        if e.name == modname.split(".")[0] and cwd not in sys.path:
            sys.path.append(cwd)
            try:
                return importlib.import_module(modname)
            except ModuleNotFoundError:
                pass
        raise ConfigError(
            f"--arch {spec}: cannot import module {modname!r} ({e}); install it or run from the folder that holds it"
        ) from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise ConfigError(
            f"--arch {spec}: importing {modname!r} failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
        ) from None


def _import_file(filename: str, spec: str):
    p = Path(filename)
    if not p.is_file():
        raise ConfigError(f"--arch {spec}: file {p} does not exist")
    name = "_refine_arch_" + hashlib.sha256(str(p.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    mspec = importlib.util.spec_from_file_location(name, p)
    if mspec is None or mspec.loader is None:
        raise ConfigError(f"--arch {spec}: {p} is not a Python file")
    mod = importlib.util.module_from_spec(mspec)
    sys.modules[name] = mod
    try:
        mspec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001
        del sys.modules[name]
        raise ConfigError(
            f"--arch {spec}: running {p} failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
        ) from None
    return mod


def import_factory(spec: str | Callable) -> Callable[..., Any]:
    """Resolve ``"package.module:factory"``, ``"path/to/file.py:factory"`` or a refine arch name.

    A callable is returned as it is. ``factory`` may be dotted (``Class.build``).
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"--arch must be 'package.module:factory', got {spec!r}")
    spec = spec.strip()
    if ":" not in spec or spec.endswith(":"):
        if spec in ARCHS:
            return ARCHS[spec]
        raise ConfigError(
            f"--arch {spec!r} is neither 'package.module:factory' (or 'file.py:factory') nor a refine architecture ({', '.join(list_archs())})"
        )
    modname, attr = spec.rsplit(":", 1)
    mod = (
        _import_file(modname, spec)
        if modname.endswith(".py") or "/" in modname or "\\" in modname
        else _import_module(modname, spec)
    )
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n, v in vars(mod).items() if callable(v) and not n.startswith("_"))[:12]
            raise ConfigError(
                f"--arch {spec}: {modname} has no attribute {attr!r}; callables there: {', '.join(public) or 'none'}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(
            f"--arch {spec}: {attr} is a {type(obj).__name__}, not a class or function that builds the network"
        )
    return obj


def check_planned_size(
    planned: dict | None, weights: dict | None, *, what: str, source, flag: str, weights_path=None
) -> None:
    """Before a network is built for real: refuse one larger than memory, and weights whose
    shapes disagree with it (both known from a build on the ``meta`` device)."""
    if planned is None:
        return
    need = sum(b for _, b in planned.values())
    limit = available_memory() // 2
    if need > limit:
        raise ConfigError(
            f"{what} ({source}) would hold {format_bytes(need)} of weights, more than fits in memory here ({format_bytes(limit)}); check {flag}"
        )
    weights = weights or {}
    for k, (shape, _) in planned.items():  # in the architecture's order, so the first mismatch is the first layer's
        v = weights.get(k)
        if isinstance(v, torch.Tensor) and tuple(v.shape) != shape:
            raise CheckpointError(
                f"{weights_path or what}: the {what.removeprefix('the ')} weights do not fit the architecture ({k} is {list(v.shape)} in the file but {list(shape)} in the architecture); check {flag}"
            )


def build_arch(
    arch: str | Callable,
    arch_kwargs: dict | str | None = None,
    *,
    role: str = "generator",
    weights: dict | None = None,
    weights_path=None,
) -> nn.Module:
    """Call the factory with its keyword arguments and check that it built an ``nn.Module``.

    The factory runs once on the ``meta`` device first: a network larger than memory, or one
    whose parameter shapes disagree with ``weights``, is refused before anything is allocated."""
    factory = import_factory(arch)
    kwargs = parse_kwargs(arch_kwargs, "--disc-arch-kwargs" if role == "discriminator" else "--arch-kwargs")
    name = arch if isinstance(arch, str) else getattr(arch, "__qualname__", repr(arch))
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        try:
            sig.bind(**kwargs)
        except TypeError as e:
            raise ConfigError(
                f"the {role} architecture {name} does not take {kwargs or 'no arguments'} ({e}); its signature is {name.split(':')[-1]}{sig}"
            ) from None
    flag = "--disc-arch/--disc-arch-kwargs" if role == "discriminator" else "--arch/--arch-kwargs"
    check_planned_size(
        planned_state(factory, kwargs), weights, what=f"the {role}", source=name, flag=flag, weights_path=weights_path
    )
    try:
        net = factory(**kwargs)
    except RefineError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's factory failed
        raise ConfigError(
            f"building the {role} with {name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
        ) from None
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"the {role} architecture {name} returned a {type(net).__name__}, expected a torch.nn.Module to load the weights into"
        )
    return net
