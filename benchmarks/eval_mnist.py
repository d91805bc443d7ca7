"""`refine eval` on the shipped MNIST DCGAN: FID / IS / precision-recall before and after refinement.

    python benchmarks/eval_mnist.py [--mnist ../shared/data/mnist] [--n 2000]

Two steps, both through the public entry points:

1. ``refine train-classifier``: the evaluation feature space, a
   ResNet-34 classifier at a quarter of the standard width trained on 20,000 MNIST training
   images (2 epochs, seed 0) and kept in ``benchmarks/_work/eval_mnist/mnist_clf.pt`` (trained
   once; delete it to retrain). It is a different network from the DRE-F-SP feature network,
   so the scores are not measured in the space the ratio was fitted in.
2. ``refine eval`` once per density ratio shipped with the GAN (DRE-F-SP and the refitted
   discriminator), methods none, rs, drs, mh (k = 20) and sir (20 candidates), ``--n`` samples
   each, seed 0, against the 10,000 MNIST test images. Exact rejection sampling (rs) is left out
   for the discriminator ratio (``--d-methods``): its acceptance rate with that ratio is so low
   that it needs about as many proposals per sample as its default budget allows, hours on a
   2-core CPU (``refine sample --ckpt pretrained/mnist_dcgan.safetensors --ratio
   pretrained/mnist_d_ratio.safetensors --method rs -n 20`` prints the rate). FID with Inception is added when the FID
   weights are supplied (``--inception-weights`` or ``$REFINE_INCEPTION_WEIGHTS``); they are not
   available offline.

Results: ``benchmarks/results/eval_mnist.md`` (the tables with the machine and date),
``benchmarks/results/eval_mnist/<ratio>/eval.{md,json,png}`` (the outputs of each command).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

WORK = REPO / "benchmarks" / "_work" / "eval_mnist"
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_MNIST = os.path.relpath(Path(os.environ.get("REFINE_SHARED", REPO.parent / "shared")) / "data" / "mnist", REPO)
SEED = 0


def main() -> None:
    from common import machine, run_python, today

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--mnist", default=DEFAULT_MNIST, help="folder with the four MNIST files (default ../shared/data/mnist)"
    )
    p.add_argument("--n", type=int, default=2000, help="samples per method")
    p.add_argument("--gan", default="pretrained/mnist_dcgan.safetensors")
    p.add_argument("--d-ratio", default="pretrained/mnist_d_ratio.safetensors")
    p.add_argument("--dre", default="pretrained/mnist_dre_f_sp.safetensors")
    p.add_argument("--inception-weights", default=os.environ.get("REFINE_INCEPTION_WEIGHTS"))
    p.add_argument("--methods", default="none,rs,drs,mh,sir", help="methods with the DRE-F-SP ratio")
    p.add_argument("--d-methods", default="none,drs,mh,sir", help="methods with the discriminator ratio")
    args = p.parse_args()
    os.chdir(REPO)
    for f in (args.gan, args.d_ratio, args.dre):
        if not Path(f).is_file():
            p.error(f"{f} not found (the shipped MNIST files come from `python benchmarks/mnist.py train`)")
    WORK.mkdir(parents=True, exist_ok=True)
    clf = WORK / "mnist_clf.pt"
    t0 = time.perf_counter()
    if not clf.is_file():
        run_python(
            [
                "-m",
                "refine",
                "train-classifier",
                "--data",
                f"mnist:{args.mnist}",
                "--out",
                str(clf),
                "--n-train",
                "20000",
                "--epochs",
                "2",
                "--seed",
                str(SEED),
                "--device",
                "cpu",
            ],
            REFINE_CACHE=str(WORK / "cache"),
        )
    spaces = [("classifier", str(clf.relative_to(REPO)))]
    if args.inception_weights:
        spaces.append(("inception", "inception"))
    sections = []
    for ratio_name, ratio, methods in (
        ("dre_f_sp", args.dre, args.methods),
        ("discriminator", args.d_ratio, args.d_methods),
    ):
        names = methods.split(",")
        opts = (["-o", "mh.k=20"] if "mh" in names else []) + (["-o", "sir.candidates=20"] if "sir" in names else [])
        for space_name, features in spaces:
            out = RESULTS / "eval_mnist" / f"{ratio_name}_{space_name}"
            cmd = [
                "-m",
                "refine",
                "eval",
                "--ckpt",
                args.gan,
                "--ratio",
                ratio,
                "--data",
                f"mnist:{args.mnist}",
                "--features",
                features,
                "--methods",
                methods,
                *opts,
                "-n",
                str(args.n),
                "--seed",
                str(SEED),
                "--device",
                "cpu",
                "--out",
                str(out.relative_to(REPO)),
                "--no-progress",
            ]
            if space_name == "inception":
                cmd += ["--inception-weights", args.inception_weights]
            run_python(cmd, REFINE_CACHE=str(WORK / "cache"))
            table = (out / "eval.md").read_text()
            sections.append(
                f"### Ratio: {ratio_name} ({ratio}), features: {space_name}\n\n`refine {' '.join(cmd[2:])}`\n\n{table}"
            )
    head = (
        f"# refine eval on the shipped MNIST DCGAN\n\n{machine()}, 1 thread; {today()}; {args.n} samples per method, seed {SEED}; "
        f"total {time.perf_counter() - t0:.0f}s.\nGenerated by `python benchmarks/eval_mnist.py {' '.join(sys.argv[1:])}`.\n\n"
    )
    from refine.io import atomic_write

    with atomic_write(RESULTS / "eval_mnist.md", "w") as f:
        f.write(head + "\n".join(sections))


if __name__ == "__main__":
    main()
