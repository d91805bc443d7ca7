"""Train the shipped class-conditional MNIST pair and its two conditional ratios, and record them in the manifest.

    python benchmarks/make_pretrained_cgan.py [--mnist ../shared/data/mnist] [--skip-gan]

Three commands, all through refine's CLI and all seeded:

1. ``refine train --method cgan``: a class-conditional DCGAN generator (conditional BatchNorm)
   and a projection discriminator with spectral norm, hinge loss, on the 60,000 MNIST training
   images. The resumable checkpoint stays in ``benchmarks/_work/cgan/``; ``pretrained/mnist_cgan.safetensors``
   is that checkpoint without its optimizer state.
2. ``refine fit-ratio --conditional`` (kind discriminator): the checkpoint's ``D(x, y)`` refitted
   with the logistic loss against the fixed generator, then one logistic calibration per class
   on 5,000 held-out images -> ``pretrained/mnist_cgan_d_ratio.safetensors``.
3. ``refine fit-ratio --kind feature-sp --conditional``: cDR-RS's conditional feature-space
   ratio, with a ResNet-34 feature network at an eighth of the standard width (a small file)
   -> ``pretrained/mnist_cgan_cdre.safetensors``.

``benchmarks/conditional_mnist.py`` evaluates the three files.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from common import refine_cli, update_manifest, without_training_state  # noqa: E402

PRE = REPO / "pretrained"
WORK = REPO / "benchmarks" / "_work" / "cgan"
DEFAULT_MNIST = os.path.relpath(Path(os.environ.get("REFINE_SHARED", REPO.parent / "shared")) / "data" / "mnist", REPO)
SEED = 0
EPOCHS = 6
GAN_FILE, D_RATIO_FILE, CDRE_FILE = (
    "mnist_cgan.safetensors",
    "mnist_cgan_d_ratio.safetensors",
    "mnist_cgan_cdre.safetensors",
)
SCRIPT = "benchmarks/make_pretrained_cgan.py"


def recipe(mnist: str) -> dict[str, list[str]]:
    data = f"mnist:{mnist}"
    common = ["--seed", str(SEED), "--device", "cpu", "--no-progress"]
    return {
        "gan": [
            "train", "--method", "cgan", "--data", data, "--n-train", "60000", "--epochs", str(EPOCHS),
            "--batch-size", "64", "--width", "32", "--d-width", "64", "--latent-dim", "64",
            "--out", str(WORK.relative_to(REPO) / "mnist_cgan_train.pt"), *common,
        ],
        "d_ratio": [
            "fit-ratio", "--ckpt", f"pretrained/{GAN_FILE}", "--conditional", "--kind", "discriminator",
            "--data", data, "--n-train", "20000", "--epochs", "1", "--batch-size", "64", "--lr", "2e-4",
            "--calibration", "logistic", "--n-calib", "5000", "--out", f"pretrained/{D_RATIO_FILE}", *common,
        ],
        "cdre": [
            "fit-ratio", "--ckpt", f"pretrained/{GAN_FILE}", "--conditional", "--kind", "feature-sp",
            "--data", data, "--n-train", "20000", "--n-val", "2000", "--feature-widths", "8,16,32,64",
            "--stem-stride", "2", "--feature-dim", "64", "--feature-epochs", "2", "--head-hidden", "128,64",
            "--lambdas", "0,0.1,1", "--epochs", "20", "--batch-size", "256", "--lr", "1e-3",
            "--out", f"pretrained/{CDRE_FILE}", *common,
        ],
    }  # fmt: skip


def main() -> None:
    from refine.io import safe_load

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", default=DEFAULT_MNIST, help="folder with the four MNIST files")
    p.add_argument("--skip-gan", action="store_true", help="reuse benchmarks/_work/cgan/mnist_cgan_train.pt")
    args = p.parse_args()
    os.chdir(REPO)
    WORK.mkdir(parents=True, exist_ok=True)
    steps = recipe(args.mnist)
    if not args.skip_gan:
        refine_cli(steps["gan"])
    without_training_state(WORK / "mnist_cgan_train.pt", PRE / GAN_FILE)
    refine_cli(steps["d_ratio"])
    refine_cli(steps["cdre"])
    gan_meta = safe_load(PRE / GAN_FILE)["meta"]
    d_meta = safe_load(PRE / D_RATIO_FILE)["meta"]
    cdre_meta = safe_load(PRE / CDRE_FILE)["meta"]
    head = cdre_meta["head"]
    entries = [
        {
            "name": "mnist-cgan",
            "file": GAN_FILE,
            "kind": "gan/conditional",
            "arch": {
                "generator": "cdcgan-g 28 px, 1 channel, nz 64, width 32, 10 classes (conditional BatchNorm, tanh)",
                "discriminator": "proj-d 28 px, 1 channel, width 64, 10 classes, projection, spectral normalisation, logit output",
            },
            "prior": "normal, shape (64, 1, 1)",
            "data": f"MNIST training split, {gan_meta.get('n_train', 60000)} images with their labels, 28x28, scaled to [-1, 1]",
            "how_trained": (
                f"cgan: hinge loss, Adam lr 2e-4 betas (0.0, 0.9), batch 64, {EPOCHS} epochs, seed {SEED} "
                "(a CPU budget: the generator is visibly imperfect); optimizer state removed for shipping"
            ),
            "command": "refine " + " ".join(steps["gan"]),
            "script": SCRIPT,
        },
        {
            "name": "mnist-cgan-d-ratio",
            "file": D_RATIO_FILE,
            "kind": "ratio/discriminator-conditional",
            "arch": "the mnist-cgan projection discriminator, refitted, with one logistic calibration per class",
            "prior": "-",
            "data": "MNIST training split: 20,000 labelled images for fitting, 5,000 others for the calibration, vs generated images of the same labels",
            "how_trained": (
                f"the GAN's discriminator trained on against the fixed generator with the logistic loss (DRS): 1 epoch, Adam lr 2e-4, "
                f"batch 64 ({d_meta['fit_time_s']:.0f} s on a 2-core CPU); logistic calibration per class (MH-GAN's, class by class)"
            ),
            "command": "refine " + " ".join(steps["d_ratio"]),
            "script": SCRIPT,
        },
        {
            "name": "mnist-cgan-cdre",
            "file": CDRE_FILE,
            "kind": "ratio/feature-sp-conditional",
            "arch": (
                "resnet34-features with stage widths 8/16/32/64 (an eighth of the standard), 3x3 stride-2 stem, 64-d features; "
                "conditional head: MLP on [class embedding (10), features] 74-128-64-1, softplus output"
            ),
            "prior": "-",
            "data": "MNIST training split, 20,000 labelled images: 2,000 held out for validation, the rest for training; generated images of the same labels",
            "how_trained": (
                f"cDR-RS: feature net a 10-way classifier, 2 epochs (validation accuracy {cdre_meta['feature_net'].get('val_acc', float('nan')):.4f}), "
                f"frozen; head: SP loss with the penalty per class, Adam 1e-3, batch 256, 20 epochs with the best validation epoch "
                f"kept, lambda from 0/0.1/1 (chose {head['lambda']:g}; E_G[r] {head['val_mean_r_fake']:.3f} averaged over classes); "
                f"{cdre_meta['fit_time_s']:.0f} s on a 2-core CPU"
            ),
            "command": "refine " + " ".join(steps["cdre"]),
            "script": SCRIPT,
        },
    ]
    update_manifest(entries)


if __name__ == "__main__":
    main()
