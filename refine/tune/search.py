"""Running the search: every method's settings through successive halving, then the test re-score.

:func:`tune` is the Python entry point of ``refine tune``. For each method it draws
``trials`` settings within the budget (:mod:`refine.tune.space`), runs them through the
rungs of :func:`refine.tune.halving.schedule`, scoring each trial on the validation
split; the settings left at the final rung make the quality-versus-cost front
(:mod:`refine.tune.front`). The best setting of each method is then run once more,
live on the real target with a fresh seed, and scored on the test split: that run is
exactly what ``refine sample --config`` replays, and the table shows its test score
next to the validation score so that a setting fitted to the noise of the validation
split shows up.

Work shared across trials: the proposal methods (rs, drs, sir, mh) read generator and
ratio outputs from one :class:`~refine.tune.pool.ProposalPool` (computed once, a critic's
temperature applied by rescaling); gradient methods run live. Every trial draws from
its own generator, seeded from the tune's seed and the trial's key, and is recorded in
a :class:`~refine.tune.journal.Journal` as soon as it finishes.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import BudgetExceededError, ConfigError, NonFiniteError
from ..ratio.discriminator import DiscriminatorRatio
from ..samplers import get_sampler
from ..target import LatentTarget
from ..validate import MAX_SEED, as_float, as_int
from .halving import Rung, promote, schedule
from .journal import Journal
from .pool import ProposalPool
from .space import (
    PROPOSAL_METHODS,
    REJECTION_BATCH,
    REJECTION_BURN_IN,
    TEMPERATURE,
    MethodSpace,
    default_spaces,
    sampler_options,
)

__all__ = ["tune", "TuneResult", "derive_seed", "is_critic", "ratio_at", "DEFAULT_METHODS"]

#: Methods searched by default: every registered refiner that needs no held-out real data.
DEFAULT_METHODS = ("none", "rs", "drs", "sir", "mh", "ddls", "dgflow", "dcd", "dot")
#: The most memory the proposal pool may take (samples and log ratios).
POOL_BYTES = 1 << 30
#: A trial is over budget when its cost exceeds the budget by more than this (float rounding).
_SLACK = 1e-9


def derive_seed(seed: int, *parts) -> int:
    """A seed for one part of a tune, from the tune's seed and the part's name (stable across runs and machines)."""
    digest = hashlib.sha256(repr((int(seed), *map(str, parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") % MAX_SEED


def is_critic(ratio) -> bool:
    """A WGAN critic read with a hand-set temperature (``log r = critic / T``): its temperature is searched."""
    return isinstance(ratio, DiscriminatorRatio) and ratio.output == "critic" and ratio.calibration is None


def ratio_at(ratio, temperature: float | None):
    """The ratio read at ``temperature`` (None: as it is)."""
    if temperature is None:
        return ratio
    return DiscriminatorRatio(
        ratio.net,
        ratio.output,
        temperature=float(temperature),
        calibration=ratio.calibration,
        differentiable=getattr(ratio, "differentiable", None),
    )


@dataclass
class TuneResult:
    """Every trial, each method's best setting with its test re-score, and the chosen one."""

    trials: list[dict]
    best: dict[str, dict]  # method -> {"setting", "validation", "test", "cost", "test_cost", "seed"}
    chosen: str | None  # the method whose best setting scores highest on validation
    budget: float
    n: int
    fingerprint: dict
    wall_time_s: float
    resumed: int = 0
    pool: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "budget": self.budget,
            "n": self.n,
            "chosen": self.chosen,
            "best": self.best,
            "trials": self.trials,
            "fingerprint": self.fingerprint,
            "wall_time_s": self.wall_time_s,
            "resumed_trials": self.resumed,
            "pool": self.pool,
        }


def _draw_settings(space: MethodSpace, count: int, *, rng: torch.Generator, budget: float, n: int) -> list[dict]:
    """Up to ``count`` distinct settings within the budget (fewer when the space holds fewer)."""
    if not space.knobs:
        return [dict(space.fixed)] if space.max_cost is None or space.max_cost(space.fixed, n) <= budget else []
    out, seen = [], set()
    for _ in range(count * 8):
        s = space.draw(rng, budget, n)
        if s is None:
            break
        key = repr(sorted(s.items()))
        if key not in seen:
            seen.add(key)
            out.append(s)
        if len(out) == count:
            break
    return out


def _rungs_for(rungs: list[Rung], count: int) -> list[Rung]:
    """The rungs ``count`` settings go through: from the last one that still holds them all (a space with
    fewer distinct settings than ``trials`` skips the rungs that would only rescore them all)."""
    first = max([i for i, r in enumerate(rungs) if r.size >= count], default=0)
    return rungs[first:]


class _Runner:
    """Runs one trial of a setting: on the shared pool for proposal methods, live otherwise."""

    def __init__(
        self,
        target: LatentTarget,
        scorer,
        spaces: dict[str, MethodSpace],
        *,
        budget: float,
        n: int,
        seed: int,
        pool_bytes: int,
        progress: bool,
    ) -> None:
        self.target, self.scorer, self.spaces = target, scorer, spaces
        self.budget, self.n_final, self.seed = budget, n, seed
        self.pool_bytes, self.progress = pool_bytes, progress
        self.critic = is_critic(target.ratio)
        self._pool: ProposalPool | None = None

    def pool(self) -> ProposalPool:
        if self._pool is None:
            want = int(math.ceil(self.n_final * self.budget)) + REJECTION_BURN_IN + REJECTION_BATCH
            with torch.no_grad():
                row = self.target.generator.sample(1, rng=torch.Generator().manual_seed(0))[1][0].numel() + 1
            cap = max(self.n_final, self.pool_bytes // (4 * row))
            self._pool = ProposalPool(
                self.target,
                min(want, cap),
                rng=torch.Generator().manual_seed(derive_seed(self.seed, "pool")),
                progress=self.progress,
            )
            self._pool.wanted = want
        return self._pool

    def target_for(self, method: str, setting: dict):
        t = setting.get(TEMPERATURE)
        if method in PROPOSAL_METHODS:
            t0 = self.target.ratio.temperature if t is not None else None
            return self.pool().view(log_r_scale=1.0 if t is None else t0 / t)
        if t is None:
            return self.target
        return LatentTarget(self.target.generator, ratio_at(self.target.ratio, t), prior_term=self.target.prior_term)

    def run(self, method: str, setting: dict, n: int, *, rng: torch.Generator, split: str, live: bool = False) -> dict:
        """One trial of ``setting`` on ``n`` samples scored on ``split``; ``live``: on the real target with the replay options."""
        space = self.spaces[method]
        opts = sampler_options(setting) if live else space.run_options(setting, self.budget, n, self.n_final)
        sampler = get_sampler(method, **opts)
        if live:
            t = setting.get(TEMPERATURE)
            target = self.target if t is None else LatentTarget(self.target.generator, ratio_at(self.target.ratio, t))
        else:
            target = self.target if method == "none" else self.target_for(method, setting)
        t0 = time.perf_counter()
        out: dict = {"method": method, "setting": setting, "n": n, "split": split}
        try:
            res = sampler.sample(target, n, rng=rng)
        except BudgetExceededError as e:
            return {
                **out,
                "status": "over_budget",
                "error": str(e).splitlines()[0],
                "wall_time_s": time.perf_counter() - t0,
            }
        except NonFiniteError as e:  # a step size too large for this ratio: a result of the search, not its end
            return {
                **out,
                "status": "diverged",
                "error": str(e).splitlines()[0],
                "wall_time_s": time.perf_counter() - t0,
            }
        wall = time.perf_counter() - t0
        cost = space.cost(setting, res.info, n, self.n_final)
        scores = self.scorer(res.x, split)
        within = cost["cost"] <= self.budget * (1 + _SLACK)
        out.update(
            status="ok" if within or live else "over_budget",
            within_budget=within,
            objective=float(scores["objective"]),
            metrics={k: v for k, v in scores.items() if k != "objective"},
            cost=cost,
            wall_time_s=wall,
        )
        for k in ("acceptance_rate", "ess", "k_eff"):
            if k in res.info:
                out[k] = res.info[k]
        if hasattr(target, "reused"):
            out["pool_reused"] = int(target.reused)
        return out


def tune(
    target: LatentTarget,
    scorer,
    *,
    budget: float,
    methods: Sequence[str] | None = None,
    n: int = 4000,
    trials: int = 27,
    eta: int = 3,
    keep: int = 3,
    seed: int = 0,
    journal: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    inputs: dict | None = None,
    spaces: dict[str, MethodSpace] | None = None,
    pool_bytes: int = POOL_BYTES,
    on_trial: Callable[[dict], None] | None = None,
) -> TuneResult:
    """Search each method's knobs within ``budget`` passes per sample and re-score the best on the test split.

    ``target`` is the generator with its ratio; ``scorer`` maps samples and a split name to
    a dict with ``objective`` (higher is better; :mod:`refine.tune.score`). ``n`` is the
    number of samples of the final rung and of the test re-score, ``trials`` the settings
    drawn per method, halved by ``eta`` until ``keep`` are left. ``journal`` (a file)
    records each finished trial; with ``resume=True`` the trials it holds are not run
    again. ``inputs`` describes the target for the fingerprint (file hashes). ``on_trial``
    is called with every finished trial record. Raises ConfigError before any work on a
    bad argument.
    """
    t_start = time.perf_counter()
    budget = as_float(budget, "budget (passes per output sample)", minimum=1.0)
    seed = as_int(seed, "seed", minimum=0, maximum=MAX_SEED - 2**20)
    rungs = schedule(n, trials, eta=eta, keep=keep)
    if target.ratio is None:
        raise ConfigError(
            "tuning needs a density ratio (every method but 'none' uses one): pass a ratio or a discriminator"
        )
    critic = is_critic(target.ratio)
    all_spaces = spaces if spaces is not None else default_spaces(methods=methods or DEFAULT_METHODS, critic=critic)
    names = list(methods or all_spaces)
    unknown = [m for m in names if m not in all_spaces]
    if unknown:
        raise ConfigError(f"methods {', '.join(unknown)} have no search space; tunable: {', '.join(all_spaces)}")
    if not names:
        raise ConfigError("no methods to tune")
    fingerprint = {
        "budget": budget,
        "n": int(n),
        "trials": int(trials),
        "eta": int(eta),
        "keep": int(keep),
        "seed": seed,
        "methods": names,
        "scorer": scorer.describe(),
        "critic_temperature_searched": critic,
        "inputs": inputs or {},
    }
    book = Journal(journal, fingerprint, resume=resume)
    runner = _Runner(
        target, scorer, all_spaces, budget=budget, n=int(n), seed=seed, pool_bytes=pool_bytes, progress=progress
    )

    drawn = {
        m: _draw_settings(
            all_spaces[m],
            trials,
            rng=torch.Generator().manual_seed(derive_seed(seed, m, "settings")),
            budget=budget,
            n=int(n),
        )
        for m in names
    }
    plans = {m: _rungs_for(rungs, len(drawn[m])) for m in names}
    work = sum(sum(min(r.size, len(drawn[m])) * r.n for r in plans[m]) for m in names)
    finished: list[dict] = []
    best: dict[str, dict] = {}
    bar = tqdm(total=work + len(names) * int(n), desc="tune", unit="sample", disable=not progress, dynamic_ncols=True)
    try:
        for m in names:
            settings = drawn[m]
            if not settings:
                continue
            alive = [{"index": i, "setting": s} for i, s in enumerate(settings)]
            my_rungs = plans[m]
            results: list[dict] = []
            for rung in my_rungs:
                results = []
                for a in alive:
                    key = f"{m}/{rung.index}/{a['index']}"
                    rec = book.get(key)
                    if rec is None:
                        bar.set_postfix_str(f"{m} rung {rung.index + 1}/{len(rungs)}", refresh=False)
                        rng = torch.Generator().manual_seed(derive_seed(seed, key))
                        rec = {
                            "key": key,
                            "index": a["index"],
                            "rung": rung.index,
                            **runner.run(m, a["setting"], rung.n, rng=rng, split="validation"),
                        }
                        book.add(key, rec)
                        if on_trial is not None:
                            on_trial(rec)
                    results.append(rec)
                    finished.append(rec)
                    bar.update(rung.n)
                final = rung is my_rungs[-1]
                if not final:
                    nxt = my_rungs[my_rungs.index(rung) + 1]
                    alive = [{"index": r["index"], "setting": r["setting"]} for r in promote(results, nxt.size)]
                    bar.total -= (nxt.size - len(alive)) * nxt.n
                    if not alive:
                        break
            top = promote(results, 1)
            if not top:
                bar.total -= int(n)
                continue
            key = f"{m}/test"
            rec = book.get(key)
            if rec is None:
                test_seed = derive_seed(seed, key) % (2**31)
                rec = {
                    "key": key,
                    "index": top[0]["index"],
                    "rung": "test",
                    "seed": test_seed,
                    **runner.run(
                        m,
                        top[0]["setting"],
                        int(n),
                        rng=torch.Generator().manual_seed(test_seed),
                        split="test",
                        live=True,
                    ),
                }
                book.add(key, rec)
                if on_trial is not None:
                    on_trial(rec)
            bar.update(int(n))
            best[m] = {"setting": top[0]["setting"], "validation": top[0], "test": rec, "seed": rec["seed"]}
    finally:
        bar.close()
    ranked = sorted(best, key=lambda m: (-best[m]["validation"]["objective"], best[m]["validation"]["cost"]["cost"]))
    pool = {}
    if runner._pool is not None:
        pool = {"size": runner._pool.size, "wanted": runner._pool.wanted}
    return TuneResult(
        trials=finished,
        best=best,
        chosen=ranked[0] if ranked else None,
        budget=budget,
        n=int(n),
        fingerprint=fingerprint,
        wall_time_s=time.perf_counter() - t_start,
        resumed=book.resumed,
        pool=pool,
    )
