"""The density-ratio protocol.

A density ratio estimates ``r(x) = p_data(x) / p_G(x)`` and exposes it in log space:
``log_ratio(x) -> (B,)``. Samplers consume only this method, so a discriminator,
a calibrated discriminator, a feature-space ratio (DRE-F-SP) or a closed-form
ratio in a test are interchangeable.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..errors import ShapeError

__all__ = ["DensityRatio", "FunctionRatio", "check_log_ratio"]


@runtime_checkable
class DensityRatio(Protocol):
    """Anything with ``log_ratio(x) -> Tensor[B]`` and a ``differentiable`` flag.

    ``differentiable`` says whether ``log_ratio`` can be differentiated with
    respect to ``x`` (an isotonic calibration, for example, cannot); gradient
    samplers refuse a ratio that declares ``False``.
    """

    differentiable: bool

    def log_ratio(self, x: torch.Tensor) -> torch.Tensor: ...


def check_log_ratio(out: torch.Tensor, batch: int, what: str = "ratio") -> torch.Tensor:
    """Flatten a ``(B,)`` or ``(B, 1)`` score to ``(B,)`` or raise a ShapeError saying what came back."""
    if not isinstance(out, torch.Tensor):
        raise ShapeError(f"{what} returned {type(out).__name__}, expected a tensor of shape ({batch},)")
    if out.dim() == 2 and out.shape[1] == 1:
        out = out[:, 0]
    elif out.dim() > 2 and out.shape[0] == batch and out[0].numel() == 1:
        out = out.reshape(batch)
    if out.dim() != 1 or out.shape[0] != batch:
        raise ShapeError(
            f"{what} returned shape {tuple(out.shape)} for a batch of {batch}; expected ({batch},) or ({batch}, 1)"
        )
    return out


class FunctionRatio:
    """Wrap a function ``x -> log r(x)`` (e.g. a closed-form ratio) as a DensityRatio."""

    def __init__(self, fn, *, differentiable: bool = True) -> None:
        self.fn = fn
        self.differentiable = differentiable

    def log_ratio(self, x: torch.Tensor) -> torch.Tensor:
        return check_log_ratio(self.fn(x), x.shape[0], "ratio function")

    def __repr__(self) -> str:
        return f"FunctionRatio({getattr(self.fn, '__name__', self.fn)!r})"
