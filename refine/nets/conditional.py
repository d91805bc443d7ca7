"""Class-conditional DCGAN networks: ``G(z, y)`` with conditional BatchNorm, ``D(x, y)`` with a projection.

Generator (``cdcgan-g``): the DCGAN generator of :mod:`refine.nets.dcgan` with every BatchNorm
replaced by a conditional BatchNorm (de Vries et al. 2017; Miyato & Koyama 2018): the
normalisation has no affine parameters of its own, and the scale and shift of each channel
are looked up from the class, ``gamma_y * BN(h) + beta_y`` (scales initialised to 1, shifts to 0).
The class enters only there, as in SN-GAN's generator: a learned class code concatenated to
``z`` at the input lets the generator grow the code until the batch normalisation after the first
layer drowns ``z``, and every sample of a class comes out the same.

Discriminator (``proj-d``): spectrally normalised convolutions with LeakyReLU(0.2) to a
``base x base`` map, globally average-pooled to features ``phi(x)``; the logit is the projection
discriminator's ``psi(phi(x)) + <embed(y), phi(x)>`` (Miyato & Koyama 2018, as in SN-GAN and
BigGAN), with spectral norm on the convolutions, the linear head and the class embedding. (A sum
over the ``7 x 7`` map makes the discriminator 49 times steeper than its layers' norms say, and
it then beats this small generator into one image per class.) At the optimum of the
GAN loss this logit is ``log p(x | y) / p_G(x | y)``, the conditional density ratio.

Both take the label as a class index ``y`` of shape ``(N,)`` (int64): the convention
``label="index"`` of :mod:`refine.conditional`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from . import register_arch
from .dcgan import _check

__all__ = ["ConditionalBatchNorm2d", "ConditionalDCGANGenerator", "ProjectionDiscriminator", "cdcgan_g", "proj_d"]


def _check_classes(num_classes: int) -> int:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    return num_classes


class ConditionalBatchNorm2d(nn.Module):
    """``gamma_y * BN(h) + beta_y``: BatchNorm without affine parameters, scale and shift per class."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.gamma(y)[:, :, None, None] * self.bn(h) + self.beta(y)[:, :, None, None]


class ConditionalDCGANGenerator(nn.Module):
    """``G(z, y)``: ``(N, nz[, 1, 1])`` latents and ``(N,)`` class indices -> images in ``[-1, 1]``."""

    def __init__(
        self, image_size: int = 28, channels: int = 1, nz: int = 100, width: int = 64, num_classes: int = 10
    ) -> None:
        super().__init__()
        base, n_up = _check(image_size, channels, width, nz)
        self.nz, self.num_classes = nz, _check_classes(num_classes)
        ch = [width * 2 ** (n_up - i) for i in range(n_up)]
        self.convs = nn.ModuleList(
            [nn.ConvTranspose2d(nz, ch[0], base, 1, 0, bias=False)]
            + [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False) for a, b in zip(ch[:-1], ch[1:])]
        )
        self.norms = nn.ModuleList([ConditionalBatchNorm2d(c, num_classes) for c in ch])
        self.out = nn.ConvTranspose2d(ch[-1], channels, 4, 2, 1)
        for m in self.modules():  # the DCGAN initialisation; conditional BatchNorm sets its own
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = z[:, :, None, None] if z.dim() == 2 else z
        for conv, norm in zip(self.convs, self.norms):
            h = torch.relu(norm(conv(h), y))
        return torch.tanh(self.out(h))


class ProjectionDiscriminator(nn.Module):
    """``D(x, y)``: images and ``(N,)`` class indices -> ``(N,)`` logits ``psi(phi(x)) + <embed(y), phi(x)>``."""

    def __init__(self, image_size: int = 28, channels: int = 1, width: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        base, n_down = _check(image_size, channels, width)
        self.num_classes = _check_classes(num_classes)
        sn = nn.utils.parametrizations.spectral_norm
        ch = [width * 2**i for i in range(n_down)]
        layers: list[nn.Module] = [sn(nn.Conv2d(channels, ch[0], 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [sn(nn.Conv2d(a, b, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        layers += [sn(nn.Conv2d(ch[-1], 2 * ch[-1], base, 1, 0)), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.head = sn(nn.Linear(2 * ch[-1], 1))
        self.embed = nn.Embedding(num_classes, 2 * ch[-1])
        nn.init.normal_(self.embed.weight, 0.0, 0.02)
        self.embed = sn(self.embed)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(N, F)``: a full ``base x base`` convolution of the last map, as DCGAN's discriminator reads it."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.phi(x)
        return self.head(h)[:, 0] + (self.embed(y) * h).sum(1)


@register_arch("cdcgan-g")
def cdcgan_g(
    image_size: int = 28, channels: int = 1, nz: int = 100, width: int = 64, num_classes: int = 10
) -> ConditionalDCGANGenerator:
    """Class-conditional DCGAN generator (conditional BatchNorm); called as ``G(z, y)``, latent ``(nz, 1, 1)``, output ``[-1, 1]``."""
    return ConditionalDCGANGenerator(image_size, channels, nz, width, num_classes)


@register_arch("proj-d")
def proj_d(image_size: int = 28, channels: int = 1, width: int = 64, num_classes: int = 10) -> ProjectionDiscriminator:
    """Projection discriminator with spectral norm; called as ``D(x, y)``, one logit per image."""
    return ProjectionDiscriminator(image_size, channels, width, num_classes)
