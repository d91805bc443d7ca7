"""Refine a GAN that refine did not train: a third party's 2-D WGAN on 25 Gaussians.

The weights are two plain state_dicts (``layers.{0..3}.weight/bias``), published
without code. All we know is their description: the generator is
Linear 2->256->256->256->2 and the critic Linear 2->512->512->512->1, ReLU between
layers, latents z ~ N(0, I_2), the critic's raw output is a WGAN critic value. So we
write the architecture here, load the weights with ``weights_only=True``, wrap the
pair, and compare the raw generator with refined samples on the mode metrics of the
WGAN-GP grid (``grid25-wgan``, high quality = within 3 std of a mode).

    python examples/wrap_foreign_wgan.py                    # weights from ../shared
    python examples/wrap_foreign_wgan.py --weights DIR --n 10000 --temperature 0.25

The same pair from the command line, with this file's factories as the architecture:

    refine eval --ckpt DIR/ddls_wgan_25Gauss_G_5000eps_state_dict.pt \\
        --arch examples/wrap_foreign_wgan.py:generator --latent-shape 2 \\
        --disc DIR/ddls_wgan_25Gauss_D_5000eps_state_dict.pt \\
        --disc-arch examples/wrap_foreign_wgan.py:critic --disc-output critic --disc-temperature 0.25 \\
        --methods none,drs,mh,sir -o mh.k=100 --data grid25-wgan --threshold 3
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import nn

import refine
from refine.data.toy2d import get_mixture
from refine.metrics import mode_metrics

G_FILE = "ddls_wgan_25Gauss_G_5000eps_state_dict.pt"
D_FILE = "ddls_wgan_25Gauss_D_5000eps_state_dict.pt"


class MLP(nn.Module):
    """Linear layers in ``self.layers`` (so the keys are ``layers.0.weight`` ...), ReLU between them."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def generator(hidden: int = 256) -> MLP:
    return MLP([2, hidden, hidden, hidden, 2])


def critic(hidden: int = 512) -> MLP:
    return MLP([2, hidden, hidden, hidden, 1])


def load(net: nn.Module, path: Path) -> nn.Module:
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False)


def default_weights() -> Path:
    shared = Path(os.environ.get("REFINE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    return shared / "weights" / "gan" / "toy2d"


METHODS = [
    ("none", {}),
    ("drs", {"gamma": 80}),
    ("mh", {"k": 100}),
    ("sir", {"candidates": 20}),
    ("ddls", {"step_size": 0.01, "steps": 50}),  # gradients flow through both networks: a gradient method runs too
]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=default_weights(), help="folder with the two state_dict files")
    ap.add_argument("--n", type=int, default=10_000, help="samples per method")
    ap.add_argument(
        "--temperature",
        type=float,
        default=0.25,
        help="log r = critic / T: a WGAN critic is an energy, not a log ratio",
    )
    ap.add_argument(
        "--methods", default=",".join(m for m, _ in METHODS), help="comma-separated subset of the methods below"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    chosen = args.methods.split(",")

    G = load(generator(), args.weights / G_FILE)
    D = load(critic(), args.weights / D_FILE)
    target = refine.wrap(
        G,
        latent_shape=2,
        prior="normal",
        output_range="none",
        discriminator=D,
        output="critic",
        temperature=args.temperature,
    )

    mixture = get_mixture("grid25-wgan")
    rows = []
    print(f"{'method':<6} {'HQ (3 std)':>10} {'modes':>6} {'KL':>7} {'G evals/sample':>15}")
    for method, options in METHODS:
        if method not in chosen or method not in refine.list_samplers():
            continue
        result = refine.sample(target, method, n=args.n, rng=torch.Generator().manual_seed(args.seed), **options)
        m = mode_metrics(result.x, mixture, threshold=3)
        row = {"method": method, **m, "g_evals_per_sample": result.info.get("g_evals_per_sample")}
        rows.append(row)
        print(
            f"{method:<6} {m['hq_fraction']:>10.3f} {m['modes']:>6d} {m['kl_uniform']:>7.3f} {row['g_evals_per_sample']:>15.1f}"
        )
    return rows


if __name__ == "__main__":
    main()
