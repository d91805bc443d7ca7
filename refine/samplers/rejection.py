"""Rejection sampling from the latent target: exact RS and DRS (Azadi et al. 2019).

Both propose ``z ~ p0`` and accept on ``log r(G(z))`` alone. The bound
``M >= max r`` is unknown; it is estimated as the maximum weight over a burn-in of
proposals and raised online whenever a proposal exceeds it (samples accepted
before an update were accepted with a slightly too small bound — the price of not
knowing M, as in the DRS paper; ``info["m_updates"]`` counts the raises).

A run that cannot meet ``budget`` proposals per sample is refused early, with the rate
seen and the remedy, instead of after spending the whole budget:

- after the burn-in, when the upper confidence bound (mean + 4 standard errors) of its
  acceptance estimate ``mean(accept(log r - log M))`` is below ``1 / budget``;
- after each batch, when even the upper bound of the rate seen so far (a Wilson bound at
  4 standard deviations) would leave the run short of ``n`` within the budget. This is the
  check that catches exact RS on a heavy-tailed ratio: the burn-in's maximum is far below
  the maximum over the millions of proposals the run would draw, and each raise of M
  lowers the rate further.

Raising M online only lowers the rate, so a refused run would, with overwhelming
probability, not have finished; the refusal never touches the random stream, so runs that
finish are unchanged.

rs's default bound (``m_quantile=None``) is exact wherever exact rs fits the budget, and
approximate where it cannot: at the point where ``m_quantile=1`` would be refused (after the
burn-in or after a batch), it caps ``r`` at the first of the burn-in's 0.99, 0.95 and 0.9
quantiles whose acceptance estimate (less 4 standard errors) still fits what is left of the
budget, warns, and goes on. The samples accepted before the switch are kept. What the cap
trades is in the record: ``capped_mass``, the share ``E[(r - M)+] / E[r]`` of the target's
mass above the bound on the burn-in, bounds the total-variation distance between the capped
target and the exact one (and so that of the whole run, whose earlier samples aim at the
exact target). A run that exact rs finishes is the same run, bit for bit; ``m_quantile=1``
keeps rs exact and refuses instead.

Small ``n``: the burn-in is a fixed cost. With the default ``burn_in`` (None) it is
10,000 proposals, or ``max(256, 4 n)`` when that is smaller; a scaled-down burn-in's
proposals are reused as the first candidates (accepted against the bound they set, the
same approximation as raising M online), and later batches are no larger than it. The
cost per sample then stays within a small factor of ``1 / acceptance`` instead of
``10,000 / n``. For ``n >= 2,500``, and for any ``burn_in`` given explicitly, the run is
exactly as before (same bits for the same seed).

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
import warnings
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from tqdm.auto import tqdm

from ..errors import BudgetExceededError, ConfigError
from ._ops import Rows, accept_log, check_budget, evaluate, log1mexp, positive
from .base import SampleInfo, Sampler, SampleResult, option, register

__all__ = [
    "DEFAULT_BURN_IN",
    "FALLBACK_QUANTILES",
    "MIN_BURN_IN",
    "DRSSampler",
    "RejectionSampler",
    "acceptance_rate",
    "burn_in_size",
    "capped_mass",
    "rate_upper_bound",
]

#: The burn-in when none is given, for n >= DEFAULT_BURN_IN / 4.
DEFAULT_BURN_IN = 10_000
#: Smallest burn-in used when the default burn-in is scaled down to a small n.
MIN_BURN_IN = 256
#: Standard errors above an acceptance estimate before a run is refused.
_REFUSE_Z = 4.0
#: The caps rs's default bound tries, in order, where exact rs cannot meet its budget. 0.99 first:
#: 1 % of proposals capped, with 100 burn-in weights above the bound at the default burn-in.
FALLBACK_QUANTILES = (0.99, 0.95, 0.9)


def _max_proposals(proposals: int, budget: int, batch_size: int) -> int:
    """The most proposals a run at ``proposals`` may reach: it checks the budget before each batch, so it can end one batch past it."""
    return proposals + batch_size * max(0, math.ceil((budget - proposals) / batch_size))


def rate_upper_bound(accepted: int, proposals: int, z: float = _REFUSE_Z) -> float:
    """Wilson upper confidence bound at ``z`` standard deviations on a binomial rate ``accepted / proposals``."""
    if proposals <= 0:
        return 1.0
    m, z2 = float(proposals), z * z
    centre = (accepted + z2 / 2) / (m + z2)
    half = z * math.sqrt(accepted * (1 - accepted / m) + z2 / 4) / (m + z2)
    return min(1.0, centre + half)


def acceptance_rate(log_w: torch.Tensor, m_quantile: float = 1.0) -> float:
    """The acceptance rate of rs over proposals with log ratios ``log_w``, ``log M`` at their ``m_quantile``.

    1: the maximum (exact rs, whose rate over more proposals can only be lower, as M grows with them);
    below 1, ratios above that quantile are capped at it.
    """
    lw = log_w.double()
    log_m = float(lw.max()) if m_quantile >= 1.0 else _quantile(lw, m_quantile)
    return float((lw - log_m).clamp_max(0).exp().mean())


def capped_mass(log_w: torch.Tensor, log_m: float) -> float:
    """``E[(r - M)+] / E[r]`` over proposals with log ratios ``log_w``: the share of the target's mass that a cap at ``M`` flattens.

    It bounds the total-variation distance between the capped target ``p0 min(r, M)`` and
    the exact one ``p0 r`` (both normalised).
    """
    lw = log_w.double()
    above = lw[lw > log_m]
    if above.numel() == 0:
        return 0.0
    excess = above + log1mexp(log_m - above)
    return float((torch.logsumexp(excess, 0) - torch.logsumexp(lw, 0)).exp())


def _quantile(log_w: torch.Tensor, q: float) -> float:
    return float(torch.quantile(log_w[:16_000_000], q))


def burn_in_size(burn_in: int | None, n: int) -> int:
    """Proposals spent on the burn-in for ``n`` samples: ``burn_in`` when given, else 10,000 or ``max(256, 4 n)`` if smaller."""
    if burn_in is not None:
        return int(burn_in)
    return min(DEFAULT_BURN_IN, max(MIN_BURN_IN, 4 * int(n)))


@dataclass(frozen=True)
class _RejectionBase(Sampler):
    batch_size: int = option(4096, "proposals evaluated per round")
    burn_in: int | None = option(
        None,
        "proposals used to estimate the bound M before sampling; none: 10000, or max(256, 4n) "
        "for small n, whose proposals are then reused as candidates",
    )
    budget: float = option(1000.0, "proposals allowed per requested sample before giving up")

    def __post_init__(self) -> None:
        positive("batch_size", self.batch_size)
        positive("burn_in", self.burn_in)
        positive("budget", self.budget)

    def planned_evals(self, n: int) -> float:
        return float(n) + float(
            burn_in_size(self.burn_in, n)
        )  # at the least: the burn-in, then one proposal per sample

    #: Whether the bound is recorded (rs: its quantile and what a cap trades; DRS's bound is always the maximum).
    _records_bound: ClassVar[bool] = False

    def _bound_quantile(self) -> float | None:
        """The quantile of the burn-in weights taken as ``log M``; 1: the maximum, raised online; None: the maximum
        while exact rs fits the budget, else the first of :data:`FALLBACK_QUANTILES` that does."""
        return 1.0

    def _log_accept(self, delta: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Log acceptance probability from ``delta = log r - log M`` (<= 0)."""
        raise NotImplementedError

    def sample(self, target, n, *, rng=None, progress=False, real=None) -> SampleResult:
        n = self._check_n(n)
        t0 = time.perf_counter()
        device = target.device
        prior = target.prior
        evaluated = 0
        n_burn = burn_in_size(self.burn_in, n)
        reuse = (
            self.burn_in is None and n_burn < DEFAULT_BURN_IN
        )  # small n: the burn-in's proposals are the first candidates
        batch_size = min(int(self.batch_size), n_burn) if reuse else int(self.batch_size)
        # Burn-in: estimate log M (and the acceptance rate it implies).
        burn, kept = [], []
        for i in range(0, n_burn, self.batch_size):
            zb = prior.sample(min(self.batch_size, n_burn - i), rng=rng, device=device)
            lw, xb = evaluate(target, zb, self.batch_size)
            burn.append(lw)
            if reuse:
                kept.append((zb, xb))
            evaluated += len(zb)
        burn_w = torch.cat(burn).double()
        q = self._bound_quantile()
        auto = q is None  # exact while it fits the budget, then capped
        online = auto or q >= 1.0
        log_m = float(burn_w.max()) if online else _quantile(burn_w, q)
        budget = int(math.ceil(self.budget * n))
        cap = _max_proposals(n_burn if reuse else 0, budget, batch_size)
        bound = {
            "bound_quantile": 1.0 if online else float(q),
            "capped_mass": None if online else capped_mass(burn_w, log_m),
            "bound_switched_after": None,
            "accepted_exact": None,  # set at a switch, else at the end
        }
        try:
            expected = self._check_expected_rate(burn_w, log_m, n, cap)
        except BudgetExceededError as refused:
            if not auto:
                raise
            log_m, expected = self._cap(burn_w, n, cap, refused, bound, proposals=0, accepted=0)
            online = False
        del burn
        out = Rows(n)  # the accepted rows, in one allocation (see Rows: a list of small tensors fragments the heap)
        accepted = proposals = updates = 0
        stats: dict = {}
        bar = tqdm(total=n, desc=self.name, unit="sample", disable=not progress, leave=False)

        def take(zb, lw, xb) -> None:
            nonlocal accepted, proposals, stats
            la, stats = self._log_accept(lw.double() - log_m)
            keep = accept_log(la, rng, lw.device)
            idx = keep.nonzero()[:, 0]
            if len(idx) >= n - accepted:  # done: count proposals up to the last one kept
                idx = idx[: n - accepted]
                proposals += int(idx[-1]) + 1
            else:
                proposals += len(zb)
            if len(idx):
                out.add(xb[idx], zb[idx])
                accepted += len(idx)
                bar.update(len(idx))

        try:
            if reuse:
                off = 0
                for zb, xb in kept:
                    if accepted < n:
                        take(zb, burn_w[off : off + len(zb)].to(zb.device), xb)
                    off += len(zb)
                del kept
            since = (0, 0)  # (proposals, accepted) when the bound was capped: the projection looks at the rate since
            while accepted < n:
                check_budget(self.name, accepted, n, proposals, budget, self._advice())
                cap = _max_proposals(proposals, budget, batch_size)
                try:
                    self._check_projection(
                        accepted - since[1], proposals - since[0], cap - since[0], n - since[1], burn_w
                    )
                except BudgetExceededError as refused:
                    if not (auto and online):
                        raise
                    log_m, _ = self._cap(
                        burn_w, n - accepted, cap - proposals, refused, bound, proposals=proposals, accepted=accepted
                    )
                    online, since = False, (proposals, accepted)
                zb = prior.sample(batch_size, rng=rng, device=device)
                lw, xb = evaluate(target, zb, batch_size)
                evaluated += len(zb)
                bmax = float(lw.max())
                if online and bmax > log_m:
                    log_m, updates = bmax, updates + 1
                take(zb, lw, xb)
        finally:
            bar.close()
        if bound["accepted_exact"] is None:  # no switch: every sample against the running maximum, or none
            bound["accepted_exact"] = accepted if bound["bound_quantile"] >= 1.0 else 0
        total = evaluated
        info = SampleInfo(
            method=self.name,
            n=n,
            g_evals=total,
            d_evals=total,
            proposals=proposals,
            accepted=accepted,
            wall_time_s=time.perf_counter() - t0,
            extras={
                "expected_acceptance_rate": expected,
                "burn_in": n_burn,
                "burn_in_reused": reuse,
                "log_M": log_m,
                "m_updates": updates,
                **(bound if self._records_bound else {}),
                **stats,
            },
        )
        x, z = out.result()
        return SampleResult(x, z, info)

    def _cap(
        self,
        burn_w: torch.Tensor,
        n: int,
        cap: int,
        refused: BudgetExceededError,
        bound: dict,
        *,
        proposals: int,
        accepted: int,
    ) -> tuple[float, float]:
        """Where exact rs was refused: the first cap of :data:`FALLBACK_QUANTILES` that fits ``n`` samples in ``cap`` proposals.

        A cap is not raised online, so the burn-in estimates its rate without bias; it fits when
        that estimate less 4 standard errors does. Returns ``(log M, rate)``, fills ``bound``
        and warns; re-raises ``refused`` when no cap fits.
        """
        for q in FALLBACK_QUANTILES:
            log_m = _quantile(burn_w, q)
            rate, se = self._burn_in_rate(burn_w, log_m)
            if (rate - _REFUSE_Z * se) * cap >= n:
                break
        else:
            raise BudgetExceededError(
                f"{refused}; no cap at the burn-in's {', '.join(map(str, FALLBACK_QUANTILES))} quantiles fits the budget either"
            ) from None
        mass = capped_mass(burn_w, log_m)
        bound.update(bound_quantile=q, capped_mass=mass, bound_switched_after=proposals, accepted_exact=accepted)
        where = "its burn-in" if proposals == 0 else f"{proposals} proposals and {accepted} samples"
        warnings.warn(
            f"{self.name}: exact rs cannot finish within its budget of {self.budget:g} proposals per sample (seen after {where}); "
            f"r is now capped at the burn-in's {q} quantile (about {1 / rate:.3g} proposals per sample): approximate, at most "
            f"{mass:.2g} from the exact target in total variation by the burn-in's estimate (recorded as capped_mass). "
            "-o m_quantile=1 keeps rs exact and refuses instead; -o budget allows more proposals",
            UserWarning,
            stacklevel=2,
        )
        return log_m, rate

    def _check_projection(self, accepted: int, proposals: int, cap: int, n: int, burn_w: torch.Tensor) -> None:
        """A BudgetExceededError when even the upper bound of the rate seen so far cannot reach ``n`` by ``cap`` proposals."""
        if proposals == 0:
            return
        upper = rate_upper_bound(accepted, proposals)
        if accepted + upper * (cap - proposals) < n:
            rate = accepted / proposals
            raise BudgetExceededError(
                f"{self.name}: {accepted} of {n} samples after {proposals} proposals (acceptance rate {rate:.2e}, at most {upper:.2e} "
                f"at 4 standard deviations): the budget of {self.budget:g} proposals per sample would end with about "
                f"{accepted + rate * (cap - proposals):.0f} samples; raise -o budget (proposals allowed per sample), or {self._advice(burn_w)}"
            )

    def _check_expected_rate(self, burn_w: torch.Tensor, log_m: float, n: int, cap: int) -> float:
        """The burn-in's estimate of the acceptance rate; a BudgetExceededError when the budget cannot be met.

        The estimate is the mean acceptance probability of the burn-in proposals against the
        bound they set; the run is refused only if the mean plus 4 standard errors times
        ``cap``, the most proposals the run may make, is still below ``n`` (raising M online
        can only lower the rate further).
        """
        rate, se = self._burn_in_rate(burn_w, log_m)
        upper = rate + _REFUSE_Z * se
        if upper * cap < n:
            raise BudgetExceededError(
                f"{self.name}: 0 of {n} samples after {len(burn_w)} proposals (the burn-in): it puts the acceptance rate at {rate:.2e} "
                f"(at most {upper:.2e}), about {1 / max(rate, 1e-300):.3g} proposals per sample against a budget of {self.budget:g}; "
                f"raise -o budget (proposals allowed per sample), or {self._advice(burn_w)}"
            )
        return rate

    def _burn_in_rate(self, burn_w: torch.Tensor, log_m: float) -> tuple[float, float]:
        """The mean acceptance probability of the burn-in's proposals against ``log M``, and its standard error."""
        a = self._log_accept(burn_w - log_m)[0].exp()
        return float(a.mean()), (float(a.std()) / math.sqrt(len(a)) if len(a) > 1 else 0.0)

    def _advice(self, burn_w: torch.Tensor | None = None) -> str:
        return "check that the ratio is not degenerate (a few huge scores make M too large)"


@register("rs")
@dataclass(frozen=True)
class RejectionSampler(_RejectionBase):
    """Rejection sampling: accept ``z ~ p0`` with probability ``min(r(G(z)), M) / M``; exact while ``M`` bounds ``r``."""

    summary = (
        "rejection sampling with the bound M from a burn-in, raised online (exact); by default capped at a quantile "
        "where exact rs cannot finish within its budget"
    )

    m_quantile: Optional[float] = option(
        None,
        "quantile of the burn-in weights used as log M; none: the max while exact rs fits the budget, else r capped at "
        "the first of the 0.99/0.95/0.9 quantiles that fits (approximate: warned, recorded as capped_mass); "
        "1: always the max, raised online (exact once M bounds r; refused over budget); below 1: r capped at M",
    )
    _records_bound: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.m_quantile is not None and not (0.0 < float(self.m_quantile) <= 1.0):
            raise ConfigError(f"m_quantile must lie in (0, 1], got {self.m_quantile}")

    def _bound_quantile(self) -> float | None:
        return None if self.m_quantile is None else float(self.m_quantile)

    def _log_accept(self, delta):
        return delta.clamp_max(0), {}

    def _advice(self, burn_w: torch.Tensor | None = None) -> str:
        text = "lower -o m_quantile (e.g. 0.99: approximate, caps r at that quantile)"
        if burn_w is not None and len(burn_w) > 1:
            text += f"; on this burn-in m_quantile=0.99 accepts about {acceptance_rate(burn_w, 0.99):.2g}"
        return text


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

    def _advice(self, burn_w: torch.Tensor | None = None) -> str:
        return "lower -o gamma (fewer rejections)"
