"""Successive halving over the number of samples a trial scores (Jamieson & Talwalkar 2016).

Every method starts with ``trials`` random settings scored on few samples; after each
rung the best ``1 / eta`` go on to ``eta`` times as many samples, until ``keep`` are left
at the final ``n``. Most of the samples (and so most of the compute) go to the settings
that look good, while a bad one costs only a small first rung. The resource is the
number of samples because a setting's cost per sample is fixed by its knobs: what a
larger rung buys is a less noisy score, not a different setting.

This module is the schedule and the selection only; :mod:`refine.tune.search` runs
the trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from ..validate import as_int

__all__ = ["Rung", "schedule", "promote", "MIN_RUNG_SAMPLES"]

#: the fewest samples a rung scores (mode histograms and nearest-neighbour metrics need some)
MIN_RUNG_SAMPLES = 50


@dataclass(frozen=True)
class Rung:
    """One rung: ``size`` settings, each scored on ``n`` samples."""

    index: int
    size: int
    n: int


def schedule(n: int, trials: int, *, eta: int = 3, keep: int = 3) -> list[Rung]:
    """The rungs from ``trials`` settings down to ``keep``, the last one at ``n`` samples.

    >>> [(r.size, r.n) for r in schedule(4000, 27)]
    [(27, 444), (9, 1333), (3, 4000)]
    """
    n = as_int(n, "n (samples of the final rung)", minimum=MIN_RUNG_SAMPLES)
    trials = as_int(trials, "trials (settings per method)", minimum=1)
    eta = as_int(eta, "eta (the halving factor)", minimum=2)
    keep = as_int(keep, "keep (settings scored at the final n)", minimum=1)
    sizes = [trials]
    while sizes[-1] > keep:
        sizes.append(max(keep, math.ceil(sizes[-1] / eta)))
    last = len(sizes) - 1
    if n // eta**last < MIN_RUNG_SAMPLES and last:
        raise ConfigError(
            f"successive halving from {trials} settings with eta {eta} has {last + 1} rungs, so its first rung would score "
            f"n / {eta**last} = {n // eta**last} samples, fewer than {MIN_RUNG_SAMPLES}; raise n or lower the trials"
        )
    return [Rung(i, size, n // eta ** (last - i)) for i, size in enumerate(sizes)]


def promote(results: list[dict], size: int) -> list[dict]:
    """The ``size`` best finished trials of a rung: highest objective first, the cheaper of a tie first.

    Trials that did not finish (over budget, diverged) are never promoted.
    """
    ok = [r for r in results if r["status"] == "ok"]
    ok.sort(key=lambda r: (-r["objective"], r["cost"]["cost"], r["index"]))
    return ok[:size]
