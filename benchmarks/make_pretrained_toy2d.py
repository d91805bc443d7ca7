"""Train the shipped 2-D GAN and its fitted ratio with the CLI, and record them in pretrained/manifest.json.

    python benchmarks/make_pretrained_toy2d.py            # about 2 minutes on a 2-core CPU

The GAN follows the DRS / Ding et al. protocol and is under-trained on purpose (10
epochs) so that refinement has work to do. The ratio is its discriminator trained on
against the fixed generator for 50 epochs (learning rate divided by 10 after 40).
Both commands run with one thread so that the files are reproducible on a CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import refine_cli, update_manifest, without_training_state  # noqa: E402

PRE = ROOT / "pretrained"
SEED = 1
TRAIN = [
    "train",
    "--data",
    "grid25",
    "--epochs",
    "10",
    "--seed",
    str(SEED),
    "--device",
    "cpu",
    "--out",
    "pretrained/toy2d_grid25_gan.safetensors",
    "--no-progress",
]
FIT = [
    "fit-ratio",
    "--ckpt",
    "pretrained/toy2d_grid25_gan.safetensors",
    "--epochs",
    "50",
    "--patience",
    "0",
    "--lr",
    "1e-3",
    "--lr-drop",
    "40",
    "--seed",
    str(SEED),
    "--device",
    "cpu",
    "--out",
    "pretrained/toy2d_grid25_ratio.safetensors",
    "--no-progress",
]


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    refine_cli(TRAIN)
    without_training_state(
        PRE / "toy2d_grid25_gan.safetensors", PRE / "toy2d_grid25_gan.safetensors"
    )  # ship the model only
    refine_cli(FIT)
    entries = [
        {
            "name": "toy2d-grid25-gan",
            "file": "toy2d_grid25_gan.safetensors",
            "kind": "gan",
            "arch": {
                "generator": "mlp 2->100->100->100->2 (ReLU)",
                "discriminator": "mlp 2->100->100->100->1 (ReLU), logit output",
            },
            "prior": "normal, shape (2,)",
            "data": "grid25: 25 Gaussians, means {-2,-1,0,1,2}^2, std 0.05; 50,000 training points",
            "how_trained": "non-saturating GAN, Adam lr 1e-3 betas (0.5, 0.999), batch 512, 10 epochs (under-trained on purpose), seed 1",
            "command": "refine " + " ".join(TRAIN),
            "script": "benchmarks/make_pretrained_toy2d.py",
        },
        {
            "name": "toy2d-grid25-ratio",
            "file": "toy2d_grid25_ratio.safetensors",
            "kind": "ratio/discriminator",
            "arch": "mlp 2->100->100->100->1 (ReLU), logit output",
            "prior": "-",
            "data": "grid25, 50,000 fresh real points vs fresh samples of toy2d-grid25-gan",
            "how_trained": "the GAN's discriminator trained on against the fixed generator: 50 epochs, lr 1e-3, divided by 10 after epoch 40, seed 1",
            "command": "refine " + " ".join(FIT),
            "script": "benchmarks/make_pretrained_toy2d.py",
        },
    ]
    update_manifest(entries)


if __name__ == "__main__":
    main()
