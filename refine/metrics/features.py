"""Run a feature network over images in batches and collect its outputs.

Works with any ``nn.Module`` whose forward returns either a feature tensor ``(B, ...)`` or a
tuple whose first two entries are ``(features, logits)`` (as
:class:`refine.metrics.inception.FIDInceptionV3` does). Batches go to the module's device; the
module is run under ``torch.inference_mode()`` and is never moved or switched to eval mode
here. Outputs come back on the CPU as ordinary tensors (usable in autograd afterwards).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..device import module_device
from ..errors import ConfigError, NonFiniteError, ShapeError

__all__ = ["iter_features", "extract_features"]

Output = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def _batch_source(data: Any, batch_size: int) -> tuple[Iterable[Any], int | None]:
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, torch.Tensor):
        if data.dim() == 0:
            raise ShapeError("data must be a batch of samples (N, ...), got a 0-d tensor")
        n = data.shape[0]
        return (data[i : i + batch_size] for i in range(0, n, batch_size)), math.ceil(n / batch_size)
    if not isinstance(data, Iterable):
        raise ConfigError(f"data must be a tensor, an array or an iterable of batches, got {type(data).__name__}")
    try:
        total = len(data)  # type: ignore[arg-type]
    except TypeError:
        total = None
    return data, total


def _first_tensor(batch: Any, index: int) -> torch.Tensor:
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ShapeError(f"batch {index} is empty")
        batch = batch[0]  # (images, labels) from a labelled dataset
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if not isinstance(batch, torch.Tensor):
        raise ConfigError(f"batch {index} is a {type(batch).__name__}; expected a tensor or an (images, labels) pair")
    return batch


def _split_output(out: Any, with_logits: bool, index: int) -> Output:
    if isinstance(out, torch.Tensor):
        if with_logits:
            raise ConfigError(
                "with_logits=True needs a module that returns (features, logits); this one returned a single tensor"
            )
        return out
    if isinstance(out, (tuple, list)) and len(out) >= 2 and all(isinstance(t, torch.Tensor) for t in out[:2]):
        return (out[0], out[1]) if with_logits else out[0]
    raise ConfigError(
        f"the module returned {type(out).__name__} for batch {index}; expected a tensor or a (features, logits) tuple"
    )


def iter_features(
    module: nn.Module,
    data: Any,
    *,
    batch_size: int = 50,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    with_logits: bool = False,
    progress: bool = True,
    desc: str = "features",
) -> Iterator[Output]:
    """Yield per-batch features ``(b, D)`` (or ``(features, logits)`` with ``with_logits``).

    ``data``: a tensor or array ``(N, ...)`` (cut into batches of ``batch_size``), or an iterable
    of batches (a DataLoader, a list, a generator), each a tensor or an ``(images, labels)``
    pair; an iterable's own batch size is used as is. ``transform`` runs on each batch on the
    module's device before the module (e.g. :func:`refine.metrics.inception.to_inception_input`).
    Features are flattened to ``(b, D)``; NaN or inf in them is an error.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if module.training:
        raise ConfigError(
            f"{type(module).__name__} is in training mode; call .eval() on it first "
            "(batch norm and dropout would change the features)"
        )
    device = module_device(module, default=None)
    batches, total = _batch_source(data, batch_size)
    bar = tqdm(batches, total=total, desc=desc, unit="batch", disable=not progress, leave=False)
    try:
        for i, batch in enumerate(bar):
            x = _first_tensor(batch, i)
            with torch.inference_mode():
                if device is not None:
                    x = x.to(device, non_blocking=True)
                if transform is not None:
                    x = transform(x)
                out = _split_output(module(x), with_logits, i)
            # Cloning outside inference mode gives ordinary tensors the caller can use anywhere.
            parts = out if isinstance(out, tuple) else (out,)
            parts = tuple(p.detach().to("cpu").reshape(p.shape[0], -1).clone() for p in parts)
            for name, p in zip(("features", "logits"), parts):
                if p.is_floating_point() and not torch.isfinite(p).all():
                    raise NonFiniteError(
                        f"the module produced NaN or inf {name} for batch {i}; check its weights and the input range"
                    )
            yield parts if with_logits else parts[0]
    finally:
        bar.close()


def extract_features(
    module: nn.Module,
    data: Any,
    *,
    batch_size: int = 50,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    with_logits: bool = False,
    progress: bool = True,
    desc: str = "features",
) -> Output:
    """All features ``(N, D)`` on the CPU (and logits ``(N, C)`` with ``with_logits``).

    Same arguments as :func:`iter_features`; for very large ``N`` stream with that instead
    (e.g. into :class:`refine.metrics.fid.StatsAccumulator`).
    """
    feats: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    for out in iter_features(
        module, data, batch_size=batch_size, transform=transform, with_logits=with_logits, progress=progress, desc=desc
    ):
        if with_logits:
            feats.append(out[0])
            logits.append(out[1])
        else:
            feats.append(out)
    if not feats:
        raise ShapeError("no data: the input held no batches")
    if with_logits:
        return torch.cat(feats), torch.cat(logits)
    return torch.cat(feats)
