"""Wrap a convolutional image generator and its discriminator, in Python and from a weights file.

Replace ``ConvG``/``ConvD`` (a small DCGAN-style pair for 1x16x16 images) with your
trained networks, or pass their state_dicts with ``--g-weights``/``--d-weights``;
with neither, the networks keep their seeded random initial weights, which shows
the wiring, not sample quality. Four things to declare, none guessed by refine:

- the latent shape and prior: ``latent_shape=(NZ, 1, 1)``, ``prior="normal"``;
- the output range: ``"[-1,1]"`` for a tanh output (``"[0,1]"`` for a sigmoid);
- what the discriminator returns: ``output="logit"`` (before the sigmoid).

The script then refines samples with DRS and SIR, writes an image grid, saves the
generator's weights as a safetensors file and loads them back into ``ConvG`` through
:mod:`refine.io.foreign` (what ``refine sample --ckpt G.safetensors --arch
examples/wrap_conv_generator.py:ConvG --latent-shape 16,1,1 --output-range [-1,1]``
does), and checks that gradients flow through it for gradient methods. This is the
safe route for any foreign network: the file holds tensors only, the architecture is
code you name and trust (TorchScript and ``torch.export`` files carry code and load only
with ``--trust-code``).

    python examples/wrap_conv_generator.py --out runs/conv --n 256
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

import refine
from refine.checks import check_gradients
from refine.errors import ConfigError
from refine.io.foreign import load_generator
from refine.plot import save_image_grid

NZ = 16


class ConvG(nn.Module):
    """(N, NZ, 1, 1) -> (N, 1, 16, 16) in [-1, 1]."""

    def __init__(self, nz: int = NZ, ngf: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),  # 4x4
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False),
            nn.Tanh(),  # 16x16
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ConvD(nn.Module):
    """(N, 1, 16, 16) -> (N, 1) logits."""

    def __init__(self, ndf: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, ndf, 4, 2, 1),
            nn.LeakyReLU(0.2, True),  # 8x8
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1),
            nn.LeakyReLU(0.2, True),  # 4x4
            nn.Conv2d(ndf * 2, 1, 4, 1, 0),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--g-weights", type=Path, help="state_dict of ConvG")
    ap.add_argument("--d-weights", type=Path, help="state_dict of ConvD")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/conv_example"))
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)  # a script may seed the global state; refine's library code never does
    G, D = ConvG(), ConvD()
    if args.g_weights:
        G.load_state_dict(torch.load(args.g_weights, map_location="cpu", weights_only=True))
    if args.d_weights:
        D.load_state_dict(torch.load(args.d_weights, map_location="cpu", weights_only=True))
    G.eval().requires_grad_(
        False
    )  # eval: BatchNorm uses its running statistics, so samples do not depend on their batch
    D.eval().requires_grad_(False)

    try:
        refine.wrap(G, latent_shape=(NZ, 1, 1), discriminator=D, output="logit")
    except ConfigError as e:
        print(f"without output_range: {e}")
    target = refine.wrap(
        G, latent_shape=(NZ, 1, 1), prior="normal", output_range="[-1,1]", discriminator=D, output="logit"
    )

    results = {}
    for method, options in [("none", {}), ("drs", {"gamma": 80, "burn_in": 2048}), ("sir", {"candidates": 10})]:
        res = refine.sample(target, method, n=args.n, rng=torch.Generator().manual_seed(args.seed), **options)
        results[method] = res
        rate = res.info.get("acceptance_rate")
        print(
            f"{method}: {tuple(res.x.shape)} samples, mean log r {float(target.log_ratio(res.x).mean()):+.4f}"
            + (f", acceptance {rate:.3f}" if rate is not None else "")
        )
    args.out.mkdir(parents=True, exist_ok=True)
    save_image_grid(args.out / "drs.png", results["drs"].x[:64], output_range="[-1,1]")

    # The same generator saved the safe way, weights only (safetensors), and loaded the way the CLI
    # loads --ckpt G.safetensors --arch examples/wrap_conv_generator.py:ConvG: the architecture is
    # code you already trust, the file holds only tensors.
    st_path = args.out / "G.safetensors"
    save_file(G.state_dict(), str(st_path))
    G_st = load_generator(st_path, arch=ConvG, latent_shape=(NZ, 1, 1), output_range="[-1,1]")
    z = G_st.sample_latent(8, rng=torch.Generator().manual_seed(1))
    with torch.no_grad():
        same = torch.equal(G_st(z), G(z))
    check_gradients(G_st, target.ratio, method="a gradient method")
    print(f"safetensors copy: same samples {same}, gradients reach z: yes -> {args.out}/drs.png, {st_path}")
    return {"results": results, "safetensors_matches": same}


if __name__ == "__main__":
    main()
