"""Resumable training: the state a run needs to continue exactly where it stopped.

A training state is a dict of plain values and tensors (it loads with
``weights_only=True``)::

    {"format": "refine.train_state", "version": 1,
     "epoch": 3,                                # epochs completed
     "history": [{"epoch": 1, ...}, ...],       # one record per completed epoch
     "rng": ByteTensor | None,                  # the torch.Generator's state after that epoch
     "modules": {name: state_dict},             # every network the method updates
     "optimizers": {name: state_dict},          # their optimizers (moments, step counts, lr)
     "extra": {...}}                            # a method's own counters, if it has any

``refine train`` stores it under ``extra["train_state"]`` of the ``refine.gan``
checkpoint it writes every ``--every`` epochs, so the same file can be sampled from
and resumed. Checkpoints are written atomically (temporary file, then rename): an
interrupt (Ctrl-C, a crash, a full disk) leaves the previous checkpoint intact.

A method exposes its state through ``modules()`` and ``optimizers()`` (dicts of
``nn.Module`` / optimizer by name); a method without them is inspected for module
and optimizer attributes. Counters that live outside those go through an optional
``extra_state() -> dict`` / ``load_extra_state(dict)`` pair.

Continuing from a state gives bit-identical results to a run that was never
interrupted, on the same device, provided the method draws all its randomness from
the ``rng`` it is given (every built-in method does).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..io import safe_load

__all__ = [
    "STATE_FORMAT",
    "STATE_KEY",
    "training_state",
    "restore_training_state",
    "read_training_state",
    "method_parts",
]

STATE_FORMAT = "refine.train_state"
STATE_KEY = "train_state"
VERSION = 1


def _cpu(obj: Any) -> Any:
    """A copy of ``obj`` with every tensor detached and moved to the CPU (state dicts nest dicts and lists)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def method_parts(method) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """``(modules, optimizers)`` of a training method, by name."""
    if hasattr(method, "modules") and hasattr(method, "optimizers"):
        mods = {k: v for k, v in method.modules().items() if v is not None}
        opts = {k: v for k, v in method.optimizers().items() if v is not None}
        return mods, opts
    mods, opts = {}, {}
    for name, value in sorted(vars(method).items()):
        net = getattr(value, "net", value)  # a LatentGenerator holds its module in .net
        if isinstance(net, nn.Module):
            mods[name] = net
        elif isinstance(value, torch.optim.Optimizer) or isinstance(value, torch.optim.lr_scheduler.LRScheduler):
            opts[name] = value
    return mods, opts


def training_state(method, *, epoch: int, rng: torch.Generator | None, history: list[dict]) -> dict:
    """Everything needed to continue training ``method`` after ``epoch`` completed epochs."""
    mods, opts = method_parts(method)
    state = {
        "format": STATE_FORMAT,
        "version": VERSION,
        "epoch": int(epoch),
        "history": [dict(h) for h in history],
        "rng": rng.get_state().clone() if rng is not None else None,
        "modules": {k: _cpu(m.state_dict()) for k, m in mods.items()},
        "optimizers": {k: _cpu(o.state_dict()) for k, o in opts.items()},
    }
    if hasattr(method, "extra_state"):
        state["extra"] = _cpu(method.extra_state())
    return state


def _optimizer_state(saved: dict, opt) -> dict:
    """A private copy of a saved optimizer state, in the form ``opt.load_state_dict`` expects.

    Checkpoints store plain values, which turns the integer keys of ``state`` into strings
    and tuples (Adam's ``betas``) into lists; an optimizer given string keys would silently
    start from fresh moments. The copy also keeps the caller's dict from being updated
    in place by later steps (``load_state_dict`` does not copy CPU tensors).
    """
    out = dict(saved)
    out["state"] = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in saved.get("state", {}).items()}
    groups = []
    for g_saved, g_now in zip(saved.get("param_groups", []), opt.state_dict()["param_groups"]):
        g = dict(g_saved)
        for key, now in g_now.items():
            if isinstance(now, tuple) and isinstance(g.get(key), list):
                g[key] = tuple(g[key])
        groups.append(g)
    out["param_groups"] = groups + list(saved.get("param_groups", []))[len(groups) :]
    return copy.deepcopy(out)


def _check_state(state, where: str) -> dict:
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"{where} holds no training state to resume from (expected {STATE_FORMAT!r}); "
            "resume from a checkpoint that `refine train` wrote, or start a new run"
        )
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{where}: training state version {state.get('version')!r} is not supported (this refine reads {VERSION})"
        )
    for key in ("epoch", "history", "modules", "optimizers"):
        if key not in state:
            raise CheckpointError(
                f"{where}: the training state lacks {key!r}; the file is damaged, resume from an earlier checkpoint"
            )
    return state


def restore_training_state(
    method, state: dict, *, rng: torch.Generator | None, where: str = "checkpoint"
) -> tuple[int, list[dict]]:
    """Load ``state`` into ``method`` (networks, optimizers, extra counters) and ``rng``.

    Returns ``(epochs completed, history so far)``. The method must have been built
    the same way as the one that was saved; a network or optimizer that does not fit
    is a :class:`CheckpointError`.
    """
    state = _check_state(state, where)
    mods, opts = method_parts(method)
    for kind, have, saved in (("network", mods, state["modules"]), ("optimizer", opts, state["optimizers"])):
        if set(have) != set(saved):
            raise CheckpointError(
                f"{where}: the run saved {kind}s {sorted(saved)}, this method has {sorted(have)}; "
                "resume with the method and options the checkpoint was trained with"
            )
    for name, net in mods.items():
        try:
            net.load_state_dict(state["modules"][name])
        except RuntimeError as e:
            first = str(e).split("\n\t")[0].splitlines()[0]
            raise CheckpointError(
                f"{where}: saved network {name!r} does not fit ({first[:200]}); resume with the settings it was trained with"
            ) from None
    for name, opt in opts.items():
        try:
            opt.load_state_dict(_optimizer_state(state["optimizers"][name], opt))
        except (ValueError, KeyError, RuntimeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(
                f"{where}: saved optimizer {name!r} does not fit ({first[:200]}); resume with the settings it was trained with"
            ) from None
    if hasattr(method, "load_extra_state") and "extra" in state:
        method.load_extra_state(copy.deepcopy(state["extra"]))
    if rng is not None and state.get("rng") is not None:
        try:
            rng.set_state(state["rng"])
        except (RuntimeError, TypeError) as e:
            raise CheckpointError(
                f"{where}: the saved random-number state does not fit a {rng.device} generator ({e})"
            ) from None
    return int(state["epoch"]), [dict(h) for h in state["history"]]


def read_training_state(path: str | os.PathLike) -> tuple[dict, dict]:
    """``(checkpoint dict, training state)`` of a checkpoint written by ``refine train``."""
    ckpt = safe_load(path, what="checkpoint to resume")
    state = (
        ckpt.get("extra", {}).get(STATE_KEY) if isinstance(ckpt, dict) and isinstance(ckpt.get("extra"), dict) else None
    )
    if state is None:
        raise CheckpointError(
            f"{path} holds no training state to resume from (a checkpoint not written by `refine train`, "
            "or by a version without resumable checkpoints); start a new run"
        )
    return ckpt, _check_state(state, str(path))
