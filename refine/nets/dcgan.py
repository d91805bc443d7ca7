"""DCGAN-family generator and discriminator (Radford et al. 2016) for 28, 32 and 64 px images.

Generator: latent ``(nz, 1, 1)`` -> a transposed convolution to ``base x base`` (7 for 28 px,
4 for 32 and 64 px), then stride-2 transposed convolutions that double the size, with
BatchNorm and ReLU in between and ``tanh`` at the end (outputs in ``[-1, 1]``).

Discriminator: the mirror image, stride-2 convolutions with LeakyReLU(0.2) down to
``base x base`` and a last convolution to one logit per image. ``norm`` picks the
normalisation of its hidden layers:

- ``"spectral"``: spectral normalisation of every layer (Miyato et al. 2018), no BatchNorm.
  The default here: the network computes the same function in train and eval mode, which
  matters when its logit is later read as a density ratio.
- ``"batch"``: BatchNorm (the original DCGAN). In eval mode the running statistics mix real
  and generated batches, so its logit is a poorer ratio estimate.
- ``"none"``: no normalisation (for a gradient penalty).

Channel widths scale with ``width``: the generator's layers have ``width * 2**k`` channels,
``k`` counting down to 1 before the output; the discriminator's ``width * 2**k`` counting up.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from . import register_arch

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "dcgan_g", "dcgan_d", "IMAGE_SIZES"]

#: Supported image sizes -> (base size, number of stride-2 layers).
IMAGE_SIZES = {28: (7, 2), 32: (4, 3), 64: (4, 4)}
D_NORMS = ("spectral", "batch", "none")


def _check(image_size: int, channels: int, width: int, nz: int | None = None) -> tuple[int, int]:
    if image_size not in IMAGE_SIZES:
        raise ConfigError(
            f"DCGAN supports image sizes {', '.join(map(str, IMAGE_SIZES))}; got {image_size} (resize the data with --image-size)"
        )
    if channels not in (1, 3):
        raise ConfigError(f"DCGAN supports 1 or 3 channels, got {channels}")
    if width < 1 or (nz is not None and nz < 1):
        raise ConfigError(f"width and nz must be positive, got width={width}, nz={nz}")
    return IMAGE_SIZES[image_size]


class DCGANGenerator(nn.Module):
    """``(N, nz, 1, 1)`` (or ``(N, nz)``) -> ``(N, channels, image_size, image_size)`` in ``[-1, 1]``."""

    def __init__(self, image_size: int = 32, channels: int = 3, nz: int = 100, width: int = 64) -> None:
        super().__init__()
        base, n_up = _check(image_size, channels, width, nz)
        self.nz = nz
        ch = [width * 2 ** (n_up - i) for i in range(n_up)]  # e.g. 32 px: 8w, 4w, 2w
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, ch[0], base, 1, 0, bias=False),
            nn.BatchNorm2d(ch[0]),
            nn.ReLU(True),
        ]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], channels, 4, 2, 1), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        _init_dcgan(self)

    def forward(self, z):
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.main(z)


class DCGANDiscriminator(nn.Module):
    """``(N, channels, image_size, image_size)`` -> ``(N,)`` logits."""

    def __init__(self, image_size: int = 32, channels: int = 3, width: int = 64, norm: str = "spectral") -> None:
        super().__init__()
        base, n_down = _check(image_size, channels, width)
        if norm not in D_NORMS:
            raise ConfigError(f"unknown discriminator norm {norm!r}; valid: {', '.join(D_NORMS)}")
        sn = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)
        ch = [width * 2**i for i in range(n_down)]  # e.g. 32 px: w, 2w, 4w
        layers: list[nn.Module] = [sn(nn.Conv2d(channels, ch[0], 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [sn(nn.Conv2d(a, b, 4, 2, 1, bias=norm != "batch"))]
            if norm == "batch":
                layers += [nn.BatchNorm2d(b)]
            layers += [nn.LeakyReLU(0.2, True)]
        layers += [sn(nn.Conv2d(ch[-1], 1, base, 1, 0))]
        self.main = nn.Sequential(*layers)
        if norm != "spectral":
            _init_dcgan(self)

    def forward(self, x):
        return self.main(x).flatten(1)[:, 0]


def _init_dcgan(net: nn.Module) -> None:
    """N(0, 0.02) convolution weights, N(1, 0.02) BatchNorm scales (the DCGAN initialisation)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@register_arch("dcgan-g")
def dcgan_g(image_size: int = 32, channels: int = 3, nz: int = 100, width: int = 64) -> DCGANGenerator:
    """DCGAN generator; latent shape ``(nz, 1, 1)``, output ``[-1, 1]``."""
    return DCGANGenerator(image_size, channels, nz, width)


@register_arch("dcgan-d")
def dcgan_d(image_size: int = 32, channels: int = 3, width: int = 64, norm: str = "spectral") -> DCGANDiscriminator:
    """DCGAN discriminator returning one logit per image."""
    return DCGANDiscriminator(image_size, channels, width, norm)
