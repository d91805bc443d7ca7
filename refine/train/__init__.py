"""Training: losses, one loop (:func:`fit`), and the methods registered by name."""

from . import (  # noqa: E402,F401  (registration)
    alphagan,
    cgan,  # noqa: E402,F401  (registration: cgan, class-conditional images)
    gan_gp,
    lbt,
    unrolled,
    veegan,
    wgan,  # noqa: E402,F401  (registration: wgan-gp)
)
from .gan import GAN, fit_discriminator
from .loop import fit
from .registry import METHODS, get_method, list_methods, register_method

__all__ = ["fit", "GAN", "fit_discriminator", "METHODS", "get_method", "list_methods", "register_method"]
