"""Independence Metropolis–Hastings over generator proposals (MH-GAN, Turner et al. 2019).

``chains`` chains run side by side in one batch. Each step proposes ``z' ~ p0`` for
every chain and accepts with ``min(1, r(G(z')) / r(G(z)))`` — the proposal is the
prior itself, so the prior terms cancel. The current state's score is cached, so a
step costs one generator and one ratio evaluation per chain. After ``k`` steps each
chain yields its state: one output per chain.

``init="real"`` starts the chains at held-out real samples (passed as ``real=``), as
MH-GAN does to avoid burn-in. A chain that never accepts a proposal would return
that real sample; it returns its first proposal instead (counted in
``info["chains_never_moved"]``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, ShapeError
from ._ops import Rows, accept_log, evaluate, positive
from .base import Sampler, SampleResult, option, register

__all__ = ["MHSampler"]


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise select: ``a[i]`` where ``mask[i]`` else ``b[i]``."""
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


@register("mh")
@dataclass(frozen=True)
class MHSampler(Sampler):
    summary = "independence Metropolis-Hastings (MH-GAN): parallel chains, k proposals each"
    k: int = option(640, "proposals per chain (chain length)")
    batch_size: int = option(4096, "chains advanced together in one batch")
    init: Literal["generated", "real"] = option(
        "generated", "start chains at a generated sample or at held-out real samples (real=)"
    )

    def __post_init__(self) -> None:
        if int(self.k) < 1:
            raise ConfigError(f"k (proposals per chain) must be >= 1, got {self.k}")
        positive("batch_size", self.batch_size)

    def planned_evals(self, n: int) -> float:
        return float(n) * (self.k + 1)

    def real_rows(self, n: int) -> int:
        return int(n) if self.init == "real" else 0

    @property
    def real_per_sample(self) -> bool:
        return self.init == "real"  # chain i starts at real sample i

    def sample(self, target, n, *, rng=None, progress=False, real=None) -> SampleResult:
        n = self._check_n(n)
        t0 = time.perf_counter()
        device = target.device
        if self.init == "real":
            if real is None:
                raise ConfigError(
                    "mh with init=real needs held-out real samples: pass real=... (refine sample draws them from the checkpoint's "
                    "dataset, and this checkpoint names none), or use init=generated"
                )
            if len(real) < n:
                raise ShapeError(
                    f"mh with init=real needs one real sample per chain: {n} chains, {len(real)} real samples"
                )
        rows = Rows(n)
        accepts = never = 0
        g = d = 0
        bar = tqdm(total=n * self.k, desc="mh", unit="proposal", disable=not progress, leave=False)
        try:
            for c0 in range(0, n, self.batch_size):
                c = min(self.batch_size, n - c0)
                if self.init == "real":
                    x = real[c0 : c0 + c].to(device)
                    lw = target.log_ratio(x).detach()
                    d += c
                    z = None
                else:
                    z = target.prior.sample(c, rng=rng, device=device)
                    lw, x = evaluate(target, z, self.batch_size)
                    g, d = g + c, d + c
                moved = torch.zeros(c, dtype=torch.bool, device=lw.device)
                first_x = first_z = None
                for step in range(self.k):
                    zp = target.prior.sample(c, rng=rng, device=device)
                    lwp, xp = evaluate(target, zp, self.batch_size)
                    g, d = g + c, d + c
                    if step == 0:
                        first_x, first_z = xp, zp
                    acc = accept_log(lwp.double() - lw.double(), rng, lw.device)
                    accepts += int(acc.sum())
                    moved |= acc
                    lw = torch.where(acc, lwp, lw)
                    x = _where(acc, xp, x)
                    z = _where(acc, zp, first_z if z is None else z)
                    bar.update(c)
                if self.init == "real":
                    stuck = ~moved
                    never += int(stuck.sum())
                    x = _where(stuck, first_x, x)
                    z = _where(stuck, first_z, z)
                rows.add(x, z)
        finally:
            bar.close()
        info = {
            "method": "mh",
            "n": n,
            "chains": n,
            "k": self.k,
            "proposals": n * self.k,
            "acceptance_rate": accepts / (n * self.k),
            "proposals_per_sample": float(self.k),
            "chains_never_moved": never,
            "g_evals": g,
            "d_evals": d,
            "g_evals_per_sample": g / n,
            "d_evals_per_sample": d / n,
            "wall_time_s": time.perf_counter() - t0,
        }
        x, z = rows.result()
        return SampleResult(x, z, info)
