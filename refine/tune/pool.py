"""Proposals computed once and shared by every proposal-method trial.

RS, DRS, SIR and MH propose ``z ~ p0`` and read only ``(log r(G(z)), G(z))``. A
:class:`ProposalPool` evaluates the generator and the ratio on a fixed set of prior
latents once; each trial then runs the real sampler on a :class:`PoolTarget`, a view
whose prior hands out the pool's latents in a fresh random order (without
replacement: the draws are i.i.d. from the prior until the pool runs out, after which
a new order is drawn and ``reused`` counts the repeats) and whose ``log_weight`` looks
them up. The samplers cannot tell the difference: what a view hands out as a latent is
a ticket (the row's index in the pool, shape ``(N, 1)``), which they only pass back.
A critic's temperature needs no new pass either: ``log r / T`` is the cached score
rescaled.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..target import LatentTarget

__all__ = ["ProposalPool", "PoolTarget"]


class ProposalPool:
    """``size`` prior latents with their samples and log ratios, evaluated in chunks of ``batch_size``."""

    def __init__(
        self, target: LatentTarget, size: int, *, rng: torch.Generator, batch_size: int = 16384, progress: bool = False
    ) -> None:
        self.target = target
        xs, lws = [], []
        with tqdm(total=size, desc="proposal pool", unit="G pass", disable=not progress, leave=False) as bar:
            for i in range(0, size, batch_size):
                z = target.prior.sample(min(batch_size, size - i), rng=rng, device=target.device)
                lw, x = target.log_weight(z)
                xs.append(x)
                lws.append(lw)
                bar.update(len(z))
        self.x = torch.cat(xs)
        self.log_r = torch.cat(lws)
        self.size = size

    def view(self, *, log_r_scale: float = 1.0) -> PoolTarget:
        """A fresh target over the pool for one trial; ``log_r_scale`` multiplies the cached ``log r`` (``T0 / T``)."""
        return PoolTarget(self, log_r_scale)


class _PoolPrior:
    """Hands out the pool's row indices, each once per random order, as ``(N, 1)`` float64 tickets."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.order: torch.Tensor | None = None
        self.cursor = 0
        self.reused = 0
        self.passes = 0

    def sample(self, n: int, rng: torch.Generator | None = None, device=None) -> torch.Tensor:
        out = []
        while n > 0:
            if self.order is None or self.cursor == self.size:
                if self.order is not None:
                    self.reused += 1
                self.order = torch.randperm(self.size, generator=rng)
                self.cursor = 0
            take = min(n, self.size - self.cursor)
            out.append(self.order[self.cursor : self.cursor + take])
            self.cursor += take
            n -= take
        return torch.cat(out).double().unsqueeze(1)


class PoolTarget:
    """What a proposal sampler needs of a :class:`~refine.target.LatentTarget` (prior, device, log_weight), served from a pool."""

    prior_term = True

    def __init__(self, pool: ProposalPool, log_r_scale: float = 1.0) -> None:
        self.pool = pool
        self.scale = float(log_r_scale)
        self.prior = _PoolPrior(pool.size)
        self.device = pool.x.device
        self.lookups = 0  # rows looked up: the G and D passes a live run would have spent

    def log_weight(self, tickets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = tickets[:, 0].long()
        self.lookups += len(idx)
        lw = self.pool.log_r[idx]
        return (lw * self.scale if self.scale != 1.0 else lw), self.pool.x[idx]

    @property
    def reused(self) -> int:
        return self.prior.reused
