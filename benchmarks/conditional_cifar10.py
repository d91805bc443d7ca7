"""Class-conditional refinement on the JPEG CIFAR-10, at a size a CPU affords: the same comparison as conditional_mnist.

    python benchmarks/conditional_cifar10.py [--data ../shared/data/cifar10/cifar10_jpg_q75_YoongiKim.zip] [--n-per-class 100]

Everything through refine's CLI, seeded, into ``benchmarks/_work/conditional_cifar10`` (reused when
present; nothing is shipped):

1. ``refine train --method cgan`` on the 50,000 training images (32 px, width 32 for both networks).
2. ``refine fit-ratio --conditional``: the discriminator refitted with the logistic loss, one logistic
   calibration per class.
3. ``refine fit-ratio --kind feature-sp --conditional``: cDR-RS's conditional feature-space ratio
   (ResNet-34 features at an eighth of the standard width).
4. ``refine train-classifier``: the evaluation feature space (quarter-width ResNet-34, seed 1), not
   a network any ratio is read from.
5. The runs of ``conditional_mnist.RUNS``, scored per class against the 10,000 test images.

The wall time of each step is in the results beside each ratio's file size. The data are the JPEG
(quality 75) archive, so the distances are not comparable with published CIFAR-10 numbers.
Results: ``benchmarks/results/conditional_cifar10.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import conditional_mnist  # noqa: E402
from cifar10 import DEFAULT_DATA  # noqa: E402

WORK = REPO / "benchmarks" / "_work" / "conditional_cifar10"
EPOCHS = 10


def steps(data: str) -> dict[str, tuple[Path, list[str]]]:
    w = WORK.relative_to(REPO)
    run = ["--seed", "0", "--device", "cpu", "--no-progress"]
    ckpt = w / "cgan.pt"
    return {
        "cgan": (ckpt, [
            "train", "--method", "cgan", "--data", data, "--n-train", "50000", "--epochs", str(EPOCHS),
            "--batch-size", "64", "--width", "32", "--d-width", "32", "--latent-dim", "100", "--out", str(ckpt), *run,
        ]),
        "d_ratio": (w / "cd.safetensors", [
            "fit-ratio", "--ckpt", str(ckpt), "--conditional", "--data", data, "--n-train", "20000", "--epochs", "1",
            "--batch-size", "64", "--lr", "2e-4", "--calibration", "logistic", "--n-calib", "5000",
            "--out", str(w / "cd.safetensors"), *run,
        ]),
        "cdre": (w / "cdre.safetensors", [
            "fit-ratio", "--ckpt", str(ckpt), "--conditional", "--kind", "feature-sp", "--data", data,
            "--n-train", "20000", "--n-val", "2000", "--feature-widths", "8,16,32,64", "--stem-stride", "2",
            "--feature-dim", "64", "--feature-epochs", "3", "--head-hidden", "128,64", "--lambdas", "0,0.1,1",
            "--epochs", "20", "--batch-size", "256", "--out", str(w / "cdre.safetensors"), *run,
        ]),
        "clf": (w / "clf.pt", [
            "train-classifier", "--data", data, "--out", str(w / "clf.pt"), "--epochs", "3",
            "--widths", "16,32,64,128", "--feature-dim", "128", "--stem-stride", "2", "--seed", "1", "--device", "cpu",
        ]),
    }  # fmt: skip


def main() -> None:
    import torch
    from common import refine_cli

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="the JPEG CIFAR-10 archive")
    p.add_argument("--n-per-class", type=int, default=100)
    args = p.parse_args()
    os.chdir(REPO)
    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    data = f"cifar10-jpg:{args.data}"
    t_all, timings = time.perf_counter(), {}
    plan = steps(data)
    for key, (out, cmd) in plan.items():
        if not (REPO / out).is_file():
            t0 = time.perf_counter()
            refine_cli(cmd)
            timings[f"{key}_s"] = time.perf_counter() - t0
    result = conditional_mnist.evaluate(  # paths relative to the repository, the working directory
        data,
        plan["cgan"][0],
        plan["d_ratio"][0],
        plan["cdre"][0],
        plan["clf"][0],
        n_per_class=args.n_per_class,
        name="conditional_cifar10",
    )
    result["commands"] = {k: "refine " + " ".join(cmd) for k, (_, cmd) in plan.items()}
    result["timings_s"].update(timings, total=time.perf_counter() - t_all)
    conditional_mnist.write(result, "conditional_cifar10")


if __name__ == "__main__":
    main()
