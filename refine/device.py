"""Where a module lives: one answer for the whole package (bottom layer: imports torch only)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["module_device"]

_CPU = torch.device("cpu")


def module_device(net, default: torch.device | None = _CPU) -> torch.device | None:
    """The device of a module's first parameter (else its first buffer); ``default`` for a
    module without tensors, or for anything that is not a module (a plain callable)."""
    if isinstance(net, nn.Module):
        for t in net.parameters():
            return t.device
        for t in net.buffers():
            return t.device
    return default
