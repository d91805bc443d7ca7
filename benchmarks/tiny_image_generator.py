"""A generator of 28x28 images that costs almost nothing to run: ``tanh(Linear(z))``.

``benchmarks/reliability.py`` draws up to 10^6 images with it through the foreign-network
route (``refine sample --ckpt STATE_DICT --arch tiny_image_generator:TinyImageGenerator``), so
that what it measures is refine's memory and I/O, not a network's compute.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyImageGenerator(nn.Module):
    def __init__(self, nz: int = 16, size: int = 28) -> None:
        super().__init__()
        self.size = size
        self.fc = nn.Linear(nz, size * size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(z.flatten(1))).view(-1, 1, self.size, self.size)
