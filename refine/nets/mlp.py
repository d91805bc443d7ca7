"""Fully connected networks for 2-D experiments."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from . import register_arch

_ACTS = {
    "relu": torch.relu,
    "leaky_relu": lambda t: nn.functional.leaky_relu(t, 0.2),
    "tanh": torch.tanh,
    "elu": nn.functional.elu,
}


class MLP(nn.Module):
    """``in_dim -> hidden (x depth) -> out_dim``, ``activation`` between layers.

    The linear layers live in ``layers`` (``layers.0`` ... ``layers.{depth}``), so a
    plain stack-of-Linear state_dict such as ``layers.0.weight`` loads into it.
    """

    def __init__(
        self, in_dim: int = 2, out_dim: int = 2, hidden: int = 100, depth: int = 3, activation: str = "relu"
    ) -> None:
        super().__init__()
        if activation not in _ACTS:
            raise ConfigError(f"unknown activation {activation!r}; valid: {', '.join(_ACTS)}")
        dims = [in_dim] + [hidden] * depth + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        act = _ACTS[self.activation]
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = act(h)
        return h


@register_arch("mlp")
def mlp(in_dim: int = 2, out_dim: int = 2, hidden: int = 100, depth: int = 3, activation: str = "relu") -> MLP:
    """``mlp(2, 2, 100, 3)`` is the DRS 2-D benchmark generator (2->100->100->100->2),
    ``mlp(2, 1, 100, 3)`` its discriminator."""
    return MLP(in_dim, out_dim, hidden, depth, activation)
