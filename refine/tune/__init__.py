"""``refine tune``: choose the method and its settings for a generator, a budget and held-out data.

- :mod:`~refine.tune.space`: what is searched per method and what a setting costs;
- :mod:`~refine.tune.halving`: successive halving over the samples a trial scores;
- :mod:`~refine.tune.pool`: generator and ratio outputs computed once for the proposal methods;
- :mod:`~refine.tune.score`: one objective per trial, on the validation or the test split;
- :mod:`~refine.tune.search`: :func:`tune`, the search and the test re-score;
- :mod:`~refine.tune.front`: the quality-versus-cost front, tables and the plot;
- :mod:`~refine.tune.config`: the config file ``refine sample --config`` replays.
"""

from .halving import schedule
from .score import ModeScorer
from .search import DEFAULT_METHODS, TuneResult, tune
from .space import default_spaces

__all__ = ["tune", "TuneResult", "ModeScorer", "schedule", "default_spaces", "DEFAULT_METHODS"]
