"""The raw generator, for before/after comparisons: ``z ~ p0``, ``x = G(z)``."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ._ops import Rows, positive
from .base import SampleInfo, Sampler, SampleResult, option, register

__all__ = ["RawSampler"]


@register("none")
@dataclass(frozen=True)
class RawSampler(Sampler):
    summary = "no refinement: the raw generator's samples"
    batch_size: int = option(4096, "samples generated per forward pass")

    def __post_init__(self) -> None:
        positive("batch_size", self.batch_size)

    @torch.no_grad()
    def sample(self, target, n, *, rng=None, progress=False, real=None) -> SampleResult:
        n = self._check_n(n)
        t0 = time.perf_counter()
        gen = target.generator if hasattr(target, "generator") else target
        z = gen.prior.sample(n, rng=rng, device=gen.device)
        rows = Rows(n)
        for i in range(0, n, self.batch_size):
            rows.add(gen(z[i : i + self.batch_size]))
        (x,) = rows.result()
        info = SampleInfo(
            method="none", n=n, g_evals=n, d_evals=0, proposals=n, accepted=n, wall_time_s=time.perf_counter() - t0
        )
        return SampleResult(x, z, info)
