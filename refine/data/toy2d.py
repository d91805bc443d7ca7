"""2-D Gaussian mixtures used by the refinement and mode-collapse literature.

Two 25-Gaussian conventions are in use, and their numbers are not comparable:

- ``grid25`` (DRS, Azadi et al. 2019; Ding et al. 2020): means ``{-2,-1,0,1,2}^2``, std 0.05.
- ``grid25-wgan`` (WGAN-GP code, and DDLS re-implementations): means ``2*{-2,...,2}/2.828``,
  std ``0.05/2.828``.
- ``grid25-veegan`` (VEEGAN / PacGAN): means ``{-4,-2,0,2,4}^2``, std 0.05.
- ``ring8`` (VEEGAN / PacGAN): 8 means on a circle of radius 1, std 0.01; ``ring8-lbt``: std 0.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError

__all__ = ["Mixture", "MIXTURES", "get_mixture", "list_mixtures"]


@dataclass(frozen=True)
class Mixture:
    """An equal-weight mixture of isotropic Gaussians in 2-D."""

    name: str
    means: tuple[tuple[float, float], ...]
    std: float

    @property
    def n_modes(self) -> int:
        return len(self.means)

    def means_tensor(self, device=None, dtype=torch.float32) -> torch.Tensor:
        return torch.tensor(self.means, device=device, dtype=dtype)

    def sample(self, n: int, *, rng: torch.Generator | None = None) -> torch.Tensor:
        """``n`` points, mode chosen uniformly; drawn on ``rng``'s device (CPU by default)."""
        if n <= 0:
            raise ConfigError(f"number of samples must be positive, got {n}")
        dev = rng.device if rng is not None else "cpu"
        idx = torch.randint(self.n_modes, (n,), generator=rng, device=dev)
        noise = torch.randn((n, 2), generator=rng, device=dev)
        return self.means_tensor(dev)[idx] + self.std * noise


def _grid(spacing: float, std: float, scale: float = 1.0, name: str = "grid25") -> Mixture:
    vals = [spacing * i / scale for i in range(-2, 3)]
    return Mixture(name, tuple((x, y) for x in vals for y in vals), std / scale)


def _ring(n: int, radius: float, std: float, name: str) -> Mixture:
    return Mixture(
        name,
        tuple((radius * math.cos(2 * math.pi * k / n), radius * math.sin(2 * math.pi * k / n)) for k in range(n)),
        std,
    )


MIXTURES: dict[str, Mixture] = {
    "grid25": _grid(1.0, 0.05),
    "grid25-wgan": _grid(2.0, 0.05, 2.828, "grid25-wgan"),
    "grid25-veegan": _grid(2.0, 0.05, 1.0, "grid25-veegan"),
    "ring8": _ring(8, 1.0, 0.01, "ring8"),
    "ring8-lbt": _ring(8, 1.0, 0.1, "ring8-lbt"),
}


def list_mixtures() -> list[str]:
    return list(MIXTURES)


def get_mixture(name: str) -> Mixture:
    if name not in MIXTURES:
        raise ConfigError(f"unknown 2-D dataset {name!r}; valid: {', '.join(MIXTURES)}")
    return MIXTURES[name]
