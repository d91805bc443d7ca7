"""A 64-px DCGAN in plain PyTorch, the layout of the PyTorch examples' DCGAN, at a CPU-sized width.

Used by ``benchmarks/foreign_dcgan.py`` as a generator and discriminator that refine did not
train: refine reaches them only through ``--arch``/``--disc-arch benchmarks/foreign_dcgan_nets.py:NAME``
and their state dicts. The discriminator ends in a sigmoid: it outputs a probability.
"""

from __future__ import annotations

from torch import nn

NZ = 100  #: latent size; the generator reads z of shape (B, NZ, 1, 1)
WIDTH = 32  #: ngf = ndf (the examples use 64; 32 quarters the cost on a CPU)


def generator(nz: int = NZ, ngf: int = WIDTH) -> nn.Module:
    def up(cin, cout, first=False):
        conv = nn.ConvTranspose2d(cin, cout, 4, 1 if first else 2, 0 if first else 1, bias=False)
        return [conv, nn.BatchNorm2d(cout), nn.ReLU(True)]

    return nn.Sequential(
        *up(nz, ngf * 8, first=True),  # 4x4
        *up(ngf * 8, ngf * 4),  # 8x8
        *up(ngf * 4, ngf * 2),  # 16x16
        *up(ngf * 2, ngf),  # 32x32
        nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False),  # 64x64
        nn.Tanh(),
    )


def discriminator(ndf: int = WIDTH) -> nn.Module:
    def down(cin, cout, bn=True):
        return [
            nn.Conv2d(cin, cout, 4, 2, 1, bias=False),
            *([nn.BatchNorm2d(cout)] if bn else []),
            nn.LeakyReLU(0.2, True),
        ]

    return nn.Sequential(
        *down(1, ndf, bn=False),  # 32x32
        *down(ndf, ndf * 2),  # 16x16
        *down(ndf * 2, ndf * 4),  # 8x8
        *down(ndf * 4, ndf * 8),  # 4x4
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
        nn.Flatten(0),
        nn.Sigmoid(),
    )
