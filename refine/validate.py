"""Argument checks shared by the public API, the CLI and the checkpoint loaders.

Each function takes a value a user gave, returns it in the one type refine works with
(numpy and torch integer scalars count as integers; ``True`` is not a number), or raises
a one-line :class:`~refine.errors.ConfigError` that names the argument, what was expected
and what was found.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

from .errors import ConfigError

__all__ = ["as_int", "as_float", "as_shape", "as_rng", "MAX_SAMPLES", "MAX_SEED", "MAX_LATENT_NUMEL"]

#: The largest ``n`` refine accepts in one call (larger runs stream through the CLI in chunks
#: and still fit this bound; a 64-bit count of samples with room for derived counters).
MAX_SAMPLES = 2**40
#: Seeds are 0 <= seed <= MAX_SEED; refine derives further seeds by adding small offsets,
#: which must stay within torch's 64-bit seed range.
MAX_SEED = 2**63 - 2**32
#: Elements of one latent sample (e.g. 100 for (100, 1, 1)); far above any generator in use.
MAX_LATENT_NUMEL = 2**24


def _found(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}..." if len(text) > 60 else text


def as_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int within ``[minimum, maximum]`` (an integral float such as ``1e4`` counts)."""
    expected = "a positive integer" if minimum == 1 else "a non-negative integer" if minimum == 0 else "an integer"
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, torch.Tensor)):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{name} must be {expected}, got {type(value).__name__} {_found(value)}")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype.is_floating_point or value.dtype == torch.bool:
            raise ConfigError(
                f"{name} must be {expected}, got a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
            )
        value = value.item()
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(
            f"{name} must be {expected}, got {value}"
            if minimum in (0, 1)
            else f"{name} must be >= {minimum}, got {value}"
        )
    if maximum is not None and value > maximum:
        raise ConfigError(
            f"{name} must be <= {maximum:.4g}, got {value:.4g}"
            if value > 10**6
            else f"{name} must be <= {maximum}, got {value}"
        )
    return value


def as_float(
    value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None, open_min: bool = False
) -> float:
    """``value`` as a finite Python float within the bounds (``open_min``: strictly above ``minimum``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {type(value).__name__} {_found(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if open_min else value < minimum):
        raise ConfigError(f"{name} must be {'>' if open_min else '>='} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def as_shape(value: Any, name: str = "latent_shape", *, max_numel: int = MAX_LATENT_NUMEL) -> tuple[int, ...]:
    """A non-empty tuple of positive ints (one int is a 1-d shape) whose product is at most ``max_numel``."""
    if isinstance(value, (str, bytes)) or value is None:
        raise ConfigError(f"{name} must be a size or a tuple of sizes such as 100 or (100, 1, 1), got {_found(value)}")
    if isinstance(value, (numbers.Integral, float)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (Sequence, torch.Size)):
        raise ConfigError(
            f"{name} must be a size or a tuple of sizes such as 100 or (100, 1, 1), got {type(value).__name__} {_found(value)}"
        )
    if len(value) == 0 or len(value) > 8:
        raise ConfigError(f"{name} must have 1 to 8 dimensions, got {_found(value)}")
    shape = tuple(as_int(s, f"{name} entry", minimum=1) for s in value)
    numel = math.prod(shape)
    if numel > max_numel:
        raise ConfigError(
            f"{name} {shape} has {numel:.3g} elements per sample, more than refine supports ({max_numel:.3g})"
        )
    return shape


def as_rng(rng: Any, name: str = "rng") -> torch.Generator | None:
    """``None`` or a ``torch.Generator``; an int seed is refused with the one-line fix."""
    if rng is None or isinstance(rng, torch.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        raise ConfigError(
            f"{name} must be a torch.Generator, got the int {rng}; pass rng=torch.Generator().manual_seed({rng})"
        )
    raise ConfigError(
        f"{name} must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), got {type(rng).__name__}"
    )
