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

The chain is written as the gradient engine is (BlackJAX style): :func:`init` scores a
batch of starting states into an :class:`MHState` (a NamedTuple), :func:`step` is a pure
``state -> (state, info)`` update, and :func:`finish` reads the outputs off the final state;
the sampler only runs them chunk by chunk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, NamedTuple, Optional

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, ShapeError
from ._ops import Rows, accept_log, evaluate, positive
from .base import SampleInfo, Sampler, SampleResult, option, register

__all__ = ["MHSampler", "MHState", "MHInfo", "init", "step", "finish"]


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise select: ``a[i]`` where ``mask[i]`` else ``b[i]``."""
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


class MHState(NamedTuple):
    """A batch of independence chains: the current samples and their scores."""

    x: torch.Tensor  # current samples (B, ...)
    z: Optional[torch.Tensor]  # their latents; None while every chain is at a real start
    log_w: torch.Tensor  # log r(x), (B,)
    moved: torch.Tensor  # (B,) bool: the chain has accepted a proposal
    first_x: Optional[torch.Tensor]  # each chain's first proposal (None before the first step)
    first_z: Optional[torch.Tensor]


class MHInfo(NamedTuple):
    accepted: torch.Tensor  # (B,) bool


def init(target, c: int, *, rng, batch_size: int, real: torch.Tensor | None = None) -> MHState:
    """``c`` chains started at ``real`` (held-out samples, scored by the ratio) or at generated samples."""
    if real is not None:
        x = real.to(target.device)
        lw, z = target.log_ratio(x).detach(), None
    else:
        z = target.prior.sample(c, rng=rng, device=target.device)
        lw, x = evaluate(target, z, batch_size)
    return MHState(x, z, lw, torch.zeros(c, dtype=torch.bool, device=lw.device), None, None)


def step(state: MHState, target, *, rng, batch_size: int) -> tuple[MHState, MHInfo]:
    """Propose ``z' ~ p0`` for every chain and accept with ``min(1, r(G(z')) / r(G(z)))``."""
    c = len(state.log_w)
    zp = target.prior.sample(c, rng=rng, device=target.device)
    lwp, xp = evaluate(target, zp, batch_size)
    first_x, first_z = (xp, zp) if state.first_x is None else (state.first_x, state.first_z)
    acc = accept_log(lwp.double() - state.log_w.double(), rng, state.log_w.device)
    new = MHState(
        _where(acc, xp, state.x),
        _where(acc, zp, first_z if state.z is None else state.z),
        torch.where(acc, lwp, state.log_w),
        state.moved | acc,
        first_x,
        first_z,
    )
    return new, MHInfo(acc)


def finish(state: MHState, *, from_real: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(x, z, never)``: each chain's output; a chain that never left its real start returns its
    first proposal instead (``never`` of them)."""
    if not from_real:
        return state.x, state.z, 0
    stuck = ~state.moved
    return _where(stuck, state.first_x, state.x), _where(stuck, state.first_z, state.z), int(stuck.sum())


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
        from_real = self.init == "real"
        if from_real:
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
                start = real[c0 : c0 + c] if from_real else None
                state = init(target, c, rng=rng, batch_size=self.batch_size, real=start)
                g, d = g + (0 if from_real else c), d + c
                for _ in range(self.k):
                    state, info = step(state, target, rng=rng, batch_size=self.batch_size)
                    g, d = g + c, d + c
                    accepts += int(info.accepted.sum())
                    bar.update(c)
                x, z, stuck = finish(state, from_real=from_real)
                never += stuck
                rows.add(x, z)
        finally:
            bar.close()
        x, z = rows.result()
        info = SampleInfo(
            method="mh",
            n=n,
            g_evals=g,
            d_evals=d,
            proposals=n * self.k,
            accepted=accepts,
            wall_time_s=time.perf_counter() - t0,
            extras={"chains": n, "k": self.k, "chains_never_moved": never},
        )
        return SampleResult(x, z, info)
