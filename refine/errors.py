"""Errors a user can cause. Each message says what was expected, what was found, and what to do.

The CLI prints these as one line without a traceback; anything else is a bug.
"""

from __future__ import annotations

__all__ = [
    "RefineError",
    "ConfigError",
    "ShapeError",
    "CheckpointError",
    "DataError",
    "NonFiniteError",
    "BudgetExceededError",
    "NotDifferentiableError",
    "MissingWeightsError",
]


class RefineError(Exception):
    """Base class of every error refine raises on purpose."""


class ConfigError(RefineError, ValueError):
    """An unknown name, an unknown option, or an option out of range."""


class ShapeError(RefineError, ValueError):
    """Tensors whose shapes do not fit together (latent size, sample shape, ratio output)."""


class CheckpointError(RefineError):
    """A checkpoint that is missing, truncated, of the wrong format, or unsafe to load."""


class DataError(RefineError):
    """A dataset root that is missing or does not hold what was expected."""


class NonFiniteError(RefineError, FloatingPointError):
    """NaN or inf where a finite number was needed (scores, gradients, samples)."""


class BudgetExceededError(RefineError):
    """A sampler could not produce the requested samples within its proposal budget."""


class NotDifferentiableError(RefineError):
    """A gradient method was given a generator or ratio that gradients do not flow through."""


class MissingWeightsError(RefineError, FileNotFoundError):
    """Network weights that are needed but not present locally (nothing is downloaded)."""
