"""Samplers driven by a latent target. ``get_sampler(name, **options)``; ``list_samplers()``.

Every method is registered by name in :data:`SAMPLERS`; importing this package
registers the built-in ones.
"""

from . import dcd, ddls, dgflow, dot, mh, raw, rejection, sir  # noqa: F401  (registration)
from .base import (
    SAMPLERS,
    Sampler,
    SampleResult,
    get_sampler,
    list_samplers,
    option,
    parse_options,
    register,
    sampler_options,
)
from .mh import MHSampler
from .raw import RawSampler
from .rejection import DRSSampler, RejectionSampler
from .sir import SIRSampler

__all__ = [
    "SAMPLERS",
    "Sampler",
    "SampleResult",
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
