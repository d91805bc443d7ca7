"""Samplers driven by a latent target. ``get_sampler(name, **options)``; ``list_samplers()``.

Every method is registered by name in :data:`SAMPLERS`; importing this package
registers the built-in ones. The layout:

- ``base``: :class:`Sampler` (options as dataclass fields, declared capabilities), the
  :class:`SampleInfo` cost record, :class:`SampleResult`, the registry;
- ``_ops``: pure log-space and batching helpers;
- ``langevin``: the gradient engine alone (state, config, ``init``/``step``/``run``);
- ``gradient``: potentials, the ratio-only view, starts, bounds, :class:`GradientSampler`;
- one file per method: ``raw`` (none), ``rejection`` (rs, drs), ``mh``, ``sir``, ``ddls``,
  ``dcd`` (with its critic fine-tuning), ``dgflow`` (with its divergences), ``dot``.
"""

from . import dcd, ddls, dgflow, dot, mh, raw, rejection, sir  # noqa: F401  (registration)
from .base import (
    SAMPLERS,
    SampleInfo,
    Sampler,
    SampleResult,
    get_sampler,
    list_samplers,
    option,
    parse_options,
    register,
    sampler_options,
)
from .gradient import GradientSampler
from .mh import MHSampler
from .raw import RawSampler
from .rejection import DRSSampler, RejectionSampler
from .sir import SIRSampler

__all__ = [
    "SAMPLERS",
    "Sampler",
    "SampleResult",
    "SampleInfo",
    "GradientSampler",
    "get_sampler",
    "list_samplers",
    "sampler_options",
    "parse_options",
    "register",
    "option",
    "RawSampler",
    "RejectionSampler",
    "DRSSampler",
    "MHSampler",
    "SIRSampler",
]
