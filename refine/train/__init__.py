"""Training: losses, one loop (:func:`fit`), and the methods registered by name."""
from .gan import GAN, fit_discriminator
from .loop import fit
from .registry import METHODS, get_method, list_methods, register_method
from . import gan_gp, unrolled, veegan, lbt, alphagan  # noqa: E402,F401  (registration)
from . import wgan  # noqa: E402,F401  (registration: wgan-gp)
from . import cgan  # noqa: E402,F401  (registration: cgan, class-conditional images)

__all__ = ["fit", "GAN", "fit_discriminator", "METHODS", "get_method", "list_methods", "register_method"]
