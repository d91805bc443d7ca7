"""refine: post-hoc refinement of GAN samples with density ratios and latent-space samplers.

The public API, re-exported names only. See README.md for a tour.
"""

from ._compat import ensure_torchvision as _ensure_torchvision

_ensure_torchvision()

from . import errors  # noqa: E402
from ._version import __version__  # noqa: E402  (the one source of the version)
from .api import sample, wrap  # noqa: E402
from .generator import LatentGenerator, NormalPrior, Prior, UniformPrior, make_prior  # noqa: E402
from .io import load_gan, load_ratio, save_gan  # noqa: E402
from .ratio import DensityRatio, DiscriminatorRatio, FunctionRatio, calibrate  # noqa: E402
from .samplers import SampleResult, get_sampler, list_samplers, sampler_options  # noqa: E402
from .target import LatentTarget  # noqa: E402

__all__ = [
    "wrap",
    "sample",
    "LatentGenerator",
    "Prior",
    "NormalPrior",
    "UniformPrior",
    "make_prior",
    "LatentTarget",
    "DensityRatio",
    "DiscriminatorRatio",
    "FunctionRatio",
    "calibrate",
    "get_sampler",
    "list_samplers",
    "sampler_options",
    "SampleResult",
    "load_gan",
    "save_gan",
    "load_ratio",
    "errors",
    "__version__",
]
