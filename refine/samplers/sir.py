"""Sampling-importance-resampling.

For each output, ``candidates`` latents are drawn from the prior and one is kept
with probability proportional to ``r(G(z))``. As ``candidates`` grows the output
converges to the target. ``info["ess"]`` is the mean effective sample size of a
candidate group divided by ``candidates`` (1: all weights equal; ``1/candidates``:
one candidate dominates).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ._ops import Rows, evaluate, log_ess, positive, resample_rows
from .base import SampleInfo, Sampler, SampleResult, option, register

__all__ = ["SIRSampler"]


@register("sir")
@dataclass(frozen=True)
class SIRSampler(Sampler):
    summary = "sampling-importance-resampling: keep 1 of `candidates` proposals, weighted by r"
    candidates: int = option(20, "proposals per output sample (the candidate multiplier)")
    batch_size: int = option(4096, "proposals evaluated per forward pass")

    def __post_init__(self) -> None:
        if int(self.candidates) < 1:
            raise ConfigError(f"candidates must be >= 1, got {self.candidates}")
        positive("batch_size", self.batch_size)

    def planned_evals(self, n: int) -> float:
        return float(n) * self.candidates

    def rows_in_memory(self) -> int:
        return max(self.batch_size, self.candidates)  # a whole candidate group is scored together

    def sample(self, target, n, *, rng=None, progress=False, real=None) -> SampleResult:
        n = self._check_n(n)
        t0 = time.perf_counter()
        m = self.candidates
        rows = max(1, self.batch_size // m)
        out = Rows(n)
        bar = tqdm(total=n, desc="sir", unit="sample", disable=not progress, leave=False)
        try:
            for i in range(0, n, rows):
                b = min(rows, n - i)
                z = target.prior.sample(b * m, rng=rng, device=target.device)
                lw, x = evaluate(target, z, self.batch_size)
                lw = lw.view(b, m)
                pick = resample_rows(lw, rng) + torch.arange(b, device=lw.device) * m
                out.add(x[pick], z[pick], log_ess(lw).exp() / m)
                bar.update(b)
        finally:
            bar.close()
        total = n * m
        x, z, ess = out.result()
        info = SampleInfo(
            method="sir",
            n=n,
            g_evals=total,
            d_evals=total,
            proposals=total,
            wall_time_s=time.perf_counter() - t0,
            extras={"candidates": m, "ess": float(ess.mean())},
        )
        return SampleResult(x, z, info)
