"""Rejection sampling from the latent target: exact RS and DRS (Azadi et al. 2019).

Both propose ``z ~ p0`` and accept on ``log r(G(z))`` alone. The bound
``M >= max r`` is unknown; it is estimated as the maximum weight over a burn-in of
proposals and raised online whenever a proposal exceeds it (samples accepted
before an update were accepted with a slightly too small bound — the price of not
knowing M, as in the DRS paper; ``info["m_updates"]`` counts the raises).

DRS accepts with ``sigmoid(F)``, where

    F = D - D_M - log(1 - exp(D - D_M - eps)) - gamma,

``D`` the log ratio (the discriminator logit) and ``D_M`` its running maximum.
``gamma`` is chosen per proposal batch so that the ``gamma``-th percentile of F is
zero. Reference implementations differ on this choice (some use a fixed shift,
some a percentile of the batch); refine takes the percentile, default 80, as in the
paper's experiments: higher keeps fewer, better samples.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ._ops import accept_log, check_budget, evaluate, log1mexp, positive
from .base import SampleResult, Sampler, option, register

__all__ = ["RejectionSampler", "DRSSampler"]


@dataclass(frozen=True)
class _RejectionBase(Sampler):
    batch_size: int = option(4096, "proposals evaluated per round")
    burn_in: int = option(10000, "proposals used to estimate the bound M before sampling")
    budget: float = option(1000.0, "proposals allowed per requested sample before giving up")

    def __post_init__(self) -> None:
        positive("batch_size", self.batch_size)
        positive("burn_in", self.burn_in)
        positive("budget", self.budget)

    def planned_evals(self, n: int) -> float:
        return float(n) + float(self.burn_in)  # at the least: the burn-in, then one proposal per sample
    def _log_accept(self, delta: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Log acceptance probability from ``delta = log r - log M`` (<= 0)."""
        raise NotImplementedError

    def sample(self, target, n, *, rng=None, progress=False, real=None) -> SampleResult:
        n = self._check_n(n)
        t0 = time.perf_counter()
        device = target.device
        prior = target.prior
        evaluated = 0
        # Burn-in: estimate log M.
        burn = []
        for i in range(0, self.burn_in, self.batch_size):
            zb = prior.sample(min(self.batch_size, self.burn_in - i), rng=rng, device=device)
            lw, _ = evaluate(target, zb, self.batch_size)
            burn.append(lw)
            evaluated += len(zb)
        burn_w = torch.cat(burn).double()
        q = getattr(self, "m_quantile", 1.0)
        online = q >= 1.0
        log_m = float(burn_w.max()) if online else float(torch.quantile(burn_w[:16_000_000], q))
        del burn, burn_w
        xs, zs = [], []
        accepted = proposals = updates = 0
        budget = int(math.ceil(self.budget * n))
        stats: dict = {}
        bar = tqdm(total=n, desc=self.name, unit="sample", disable=not progress, leave=False)
        try:
            while accepted < n:
                check_budget(self.name, accepted, n, proposals, budget, self._advice())
                zb = prior.sample(self.batch_size, rng=rng, device=device)
                lw, xb = evaluate(target, zb, self.batch_size)
                evaluated += len(zb)
                bmax = float(lw.max())
                if online and bmax > log_m:
                    log_m, updates = bmax, updates + 1
                la, stats = self._log_accept(lw.double() - log_m)
                keep = accept_log(la, rng, lw.device)
                idx = keep.nonzero()[:, 0]
                if len(idx) >= n - accepted:  # done: count proposals up to the last one kept
                    idx = idx[: n - accepted]
                    proposals += int(idx[-1]) + 1
                else:
                    proposals += len(zb)
                if len(idx):
                    xs.append(xb[idx])
                    zs.append(zb[idx])
                    accepted += len(idx)
                    bar.update(len(idx))
        finally:
            bar.close()
        total = evaluated
        info = {
            "method": self.name,
            "n": n,
            "proposals": proposals,
            "accepted": accepted,
            "acceptance_rate": accepted / proposals,
            "proposals_per_sample": proposals / n,
            "burn_in": self.burn_in,
            "log_M": log_m,
            "m_updates": updates,
            "g_evals": total,
            "d_evals": total,
            "g_evals_per_sample": total / n,
            "d_evals_per_sample": total / n,
            "wall_time_s": time.perf_counter() - t0,
            **stats,
        }
        return SampleResult(torch.cat(xs)[:n], torch.cat(zs)[:n], info)

    def _advice(self) -> str:
        return "check that the ratio is not degenerate (a few huge scores make M too large)"


@register("rs")
@dataclass(frozen=True)
class RejectionSampler(_RejectionBase):
    """Exact rejection sampling: accept ``z ~ p0`` with probability ``r(G(z)) / M``."""

    summary = "exact rejection sampling with the bound M from a burn-in, raised online"

    m_quantile: float = option(1.0, "quantile of the burn-in weights used as log M; 1 = the max, raised online (exact once M bounds r); "
                                     "below 1 caps r at M (approximate, higher acceptance)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0.0 < float(self.m_quantile) <= 1.0):
            raise ConfigError(f"m_quantile must lie in (0, 1], got {self.m_quantile}")

    def _log_accept(self, delta):
        return delta.clamp_max(0), {}

    def _advice(self) -> str:
        return "lower -o m_quantile (e.g. 0.99: approximate, caps r at that quantile)"


@register("drs")
@dataclass(frozen=True)
class DRSSampler(_RejectionBase):
    """Discriminator Rejection Sampling (Azadi et al. 2019)."""

    summary = "Discriminator Rejection Sampling: accept with sigmoid(F), F shifted by a batch percentile gamma"
    gamma: float = option(80.0, "percentile in [0, 100] of F over each batch that is shifted to 0 (higher: stricter)")
    eps: float = option(1e-6, "epsilon inside log(1 - exp(D - D_M - eps))")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0.0 <= float(self.gamma) <= 100.0):
            raise ConfigError(f"gamma is a percentile and must lie in [0, 100], got {self.gamma}")
        positive("eps", self.eps)

    def _log_accept(self, delta):
        f = delta - log1mexp(delta - self.eps)
        shift = torch.quantile(f, self.gamma / 100.0) if f.numel() <= 16_000_000 else f.median()
        return torch.nn.functional.logsigmoid(f - shift), {"gamma_shift": float(shift)}

    def _advice(self) -> str:
        return "lower -o gamma (fewer rejections)"
