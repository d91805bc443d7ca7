"""MNIST benchmark: raw DCGAN vs refinement with discriminator ratios vs with DRE-F-SP.

    python benchmarks/mnist.py train [--mnist ../shared/data/mnist]   # makes pretrained/mnist_* (CLI commands below)
    python benchmarks/mnist.py eval  [--mnist ../shared/data/mnist] [--n 2000]

``train`` runs the three ``refine`` commands in ``RECIPE`` (one thread each, so the files are
reproducible on a CPU), removes the optimizer state from the GAN checkpoint so that it is small
enough to ship, and records the files in ``pretrained/manifest.json`` (name, arch, prior, data,
how trained, command, sha256). The budget is chosen for a 2-core CPU shared with other work:
a DCGAN of width 32 (G) / 64 (D) trained for 12 epochs on 20,000 training images, and a ResNet-34
whose four stages are 16/32/64/128 channels wide (a quarter of the standard width) with a stride-2
stem, trained for 3 epochs on 35,000 images.

``eval`` scores ``--n`` samples per method by FID in a feature space trained on MNIST (Ding et
al.'s protocol of a dataset-trained feature network): the 128-d penultimate layer of a small CNN
classifier trained here on the 60,000 training images (two conv layers, one epoch, fixed seed),
against the 10,000 test images. That network is separate from the DRE-F-SP feature network, so
the score is not measured in the space the ratio was fitted in; the FID in the DRE-F-SP ResNet's
feature space is reported too, for reference. Inception FID is computed only when the FID
Inception weights are supplied (``--inception-weights`` or ``$REFINE_INCEPTION_WEIGHTS``); they are
not downloaded. Every method gets the same seed (paired comparisons). Cost per method: wall time,
generator and ratio evaluations per output sample, acceptance rate.

Results: ``benchmarks/results/mnist.json``, ``mnist.md`` and ``mnist.png`` (64 samples per method).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from common import refine_cli, update_manifest, without_training_state  # noqa: E402

PRE = REPO / "pretrained"
WORK = REPO / "benchmarks" / "_work" / "mnist"
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_MNIST = os.path.relpath(Path(os.environ.get("REFINE_SHARED", REPO.parent / "shared")) / "data" / "mnist", REPO)
SEED = 0

GAN_FILE, D_RATIO_FILE, DRE_FILE = "mnist_dcgan.safetensors", "mnist_d_ratio.safetensors", "mnist_dre_f_sp.safetensors"


def recipe(mnist: str) -> dict[str, list[str]]:
    data = f"mnist:{mnist}"
    return {
        "gan": [
            "train",
            "--data",
            data,
            "--n-train",
            "20000",
            "--epochs",
            "12",
            "--batch-size",
            "64",
            "--latent-dim",
            "100",
            "--width",
            "32",
            "--d-width",
            "64",
            "--d-norm",
            "spectral",
            "--seed",
            str(SEED),
            "--device",
            "cpu",
            "--out",
            str(WORK.relative_to(REPO) / "mnist_dcgan_train.pt"),
            "--no-progress",
        ],
        "d_ratio": [
            "fit-ratio",
            "--ckpt",
            f"pretrained/{GAN_FILE}",
            "--kind",
            "discriminator",
            "--data",
            data,
            "--n-train",
            "20000",
            "--epochs",
            "2",
            "--patience",
            "0",
            "--batch-size",
            "64",
            "--lr",
            "2e-4",
            "--calibration",
            "logistic",
            "--n-calib",
            "5000",
            "--seed",
            str(SEED),
            "--device",
            "cpu",
            "--out",
            f"pretrained/{D_RATIO_FILE}",
            "--no-progress",
        ],
        "dre": [
            "fit-ratio",
            "--ckpt",
            f"pretrained/{GAN_FILE}",
            "--kind",
            "feature-sp",
            "--data",
            data,
            "--n-train",
            "40000",
            "--n-val",
            "5000",
            "--feature-widths",
            "16,32,64,128",
            "--stem-stride",
            "2",
            "--feature-dim",
            "128",
            "--feature-epochs",
            "3",
            "--head-hidden",
            "256,128",
            "--lambdas",
            "0,0.1,1",
            "--epochs",
            "80",
            "--batch-size",
            "256",
            "--lr",
            "1e-3",
            "--seed",
            str(SEED),
            "--device",
            "cpu",
            "--out",
            f"pretrained/{DRE_FILE}",
            "--no-progress",
        ],
    }


# --------------------------------------------------------------------------- train
def train(args) -> None:
    from refine.io import safe_load

    WORK.mkdir(parents=True, exist_ok=True)
    steps = recipe(args.mnist)
    if not args.skip_gan:
        refine_cli(steps["gan"])
    # Ship the model without its optimizer state (kept in benchmarks/_work for --resume).
    without_training_state(WORK / "mnist_dcgan_train.pt", PRE / GAN_FILE)
    refine_cli(steps["d_ratio"])
    refine_cli(steps["dre"])
    dre_meta = safe_load(PRE / DRE_FILE)["meta"]
    gan_meta = safe_load(PRE / GAN_FILE)["meta"]
    entries = [
        {
            "name": "mnist-dcgan",
            "file": GAN_FILE,
            "kind": "gan",
            "arch": {
                "generator": "dcgan-g 28 px, 1 channel, nz 100, width 32 (BatchNorm, tanh)",
                "discriminator": "dcgan-d 28 px, 1 channel, width 64, spectral normalisation, logit output",
            },
            "prior": "normal, shape (100, 1, 1)",
            "data": f"MNIST training split, random subset of {gan_meta['n_train']} images (seed {SEED}), 28x28, scaled to [-1, 1]",
            "how_trained": (
                "non-saturating GAN, Adam lr 2e-4 betas (0.5, 0.999), batch 64, 12 epochs over the subset (3,744 steps; "
                "a CPU budget, so the generator is visibly imperfect), seed 0; run as 4 epochs and then `refine train --resume ... "
                "--epochs 12`, which gives the same weights as the one command below; optimizer state removed for shipping"
            ),
            "command": "refine " + " ".join(steps["gan"]),
            "script": "benchmarks/mnist.py train",
        },
        {
            "name": "mnist-d-ratio",
            "file": D_RATIO_FILE,
            "kind": "ratio/discriminator",
            "arch": "the mnist-dcgan discriminator, refitted, with a logistic calibration",
            "prior": "-",
            "data": "MNIST training split: 20,000 images for fitting, 5,000 other images for the calibration, vs fresh generated images",
            "how_trained": "the GAN's discriminator trained on against the fixed generator (DRS): 2 epochs, Adam lr 2e-4, batch 64; logistic calibration (MH-GAN)",
            "command": "refine " + " ".join(steps["d_ratio"]),
            "script": "benchmarks/mnist.py train",
        },
        {
            "name": "mnist-dre-f-sp",
            "file": DRE_FILE,
            "kind": "ratio/feature-sp",
            "arch": (
                "resnet34-features: timm resnet34 (stages 3-4-6-3) with stage widths 16/32/64/128 (a quarter of the standard, "
                "to fit a few MB and a CPU budget), 3x3 stride-2 CIFAR-style stem, 128-d feature layer; ratio head MLP 128-256-128-1, softplus output"
            ),
            "prior": "-",
            "data": (
                "MNIST training split, 40,000-image subset: 5,000 held out for validation (lambda and epoch), 35,000 for training; "
                "as many fresh generated images"
            ),
            "how_trained": (
                f"feature net: 10-way classifier, cross-entropy, Adam 1e-3 cosine, 3 epochs, then frozen "
                f"(validation accuracy {dre_meta['feature_net'].get('val_acc', float('nan')):.4f}); ratio head: SP loss, Adam 1e-3, "
                f"batch 256, 80 epochs with the best validation epoch kept, lambda chosen from 0/0.1/1 on validation SP loss "
                f"(chose {dre_meta['head']['lambda']:g})"
            ),
            "command": "refine " + " ".join(steps["dre"]),
            "script": "benchmarks/mnist.py train",
        },
    ]
    update_manifest(entries)


# --------------------------------------------------------------------------- the evaluation feature space
def eval_network():
    from torch import nn

    class SmallCNN(nn.Module):
        """conv 32 -> pool -> conv 64 -> pool -> fc 128 (features) -> fc 10."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(64 * 7 * 7, 128),
                nn.ReLU(),
            )
            self.fc = nn.Linear(128, 10)

        def features(self, x):
            return self.conv(x)

        def forward(self, x):
            return self.fc(self.features(x))

    return SmallCNN()


def get_evaluator(mnist: str, log) -> tuple:
    """The small CNN of the FID feature space: trained once (cached in benchmarks/_work), with its test accuracy."""
    import torch
    import torch.nn.functional as F

    from refine.data.images import load_images
    from refine.io import atomic_save, safe_load

    path = WORK / "eval_cnn.pt"
    net = eval_network()
    test = load_images(f"mnist:{mnist}", split="test")
    if path.is_file():
        net.load_state_dict(safe_load(path)["state"])
    else:
        train = load_images(f"mnist:{mnist}", split="train")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1234)
            net = eval_network()
        g = torch.Generator().manual_seed(1234)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        perm = torch.randperm(len(train), generator=g)
        net.train()
        t0 = time.perf_counter()
        for i in range(0, len(train) - 127, 128):
            idx = perm[i : i + 128]
            loss = F.cross_entropy(net(train.float(idx)), train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        log(f"evaluation CNN trained in {time.perf_counter() - t0:.0f}s")
        atomic_save({"state": net.state_dict()}, path)
    net.eval().requires_grad_(False)
    with torch.no_grad():
        acc = float(
            sum(
                (net(test.float(slice(i, i + 1000))).argmax(1) == test.labels[i : i + 1000]).sum()
                for i in range(0, len(test), 1000)
            )
            / len(test)
        )
    return net, test, acc


class _Features:
    """``forward = features`` so that refine.metrics.features.extract_features can run the network."""

    def __new__(cls, net):
        from torch import nn

        class F(nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner.features(x)

        return F(net).eval()


# --------------------------------------------------------------------------- eval
METHODS = [
    # (label, ratio, sampler, options). Exact rejection (M = running maximum of r) is run for DRE-F-SP, the method of
    # Ding et al.; the other rejection rows take M at the 99th percentile of the burn-in weights (r capped there), which
    # keeps their cost near that of the other samplers.
    ("raw generator", None, "none", {}),
    ("D: rs (M = 99th pct)", "d", "rs", {"m_quantile": 0.99}),
    ("D: drs (DRS, gamma 80)", "d", "drs", {}),
    ("D: mh (MH-GAN, k 50)", "d", "mh", {"k": 50}),
    ("D: sir (20 candidates)", "d", "sir", {"candidates": 20}),
    ("DRE-F-SP: rs (exact)", "dre", "rs", {"m_quantile": 1.0}),
    ("DRE-F-SP: rs (M = 99th pct)", "dre", "rs", {"m_quantile": 0.99}),
    ("DRE-F-SP: drs (gamma 80)", "dre", "drs", {}),
    ("DRE-F-SP: mh (k 50)", "dre", "mh", {"k": 50}),
    ("DRE-F-SP: sir (20 candidates)", "dre", "sir", {"candidates": 20}),
]


def evaluate(args) -> None:
    import numpy as np
    import torch
    from common import machine, today

    from refine.eval import save_image_panels, to_uint8
    from refine.io import atomic_write, file_sha256, load_gan, load_ratio, write_json
    from refine.metrics.features import extract_features
    from refine.metrics.fid import feature_statistics, frechet_distance
    from refine.samplers import get_sampler
    from refine.target import LatentTarget

    torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    files = {
        "gan": Path(args.gan or PRE / GAN_FILE),
        "d": args.d_ratio or PRE / D_RATIO_FILE,
        "dre": Path(args.dre or PRE / DRE_FILE),
    }
    gan = load_gan(files["gan"])
    ratios = {"d": gan.ratio if files["d"] == "checkpoint" else load_ratio(files["d"]), "dre": load_ratio(files["dre"])}
    cnn, test, acc = get_evaluator(args.mnist, log)
    log(f"evaluation CNN test accuracy {acc:.4f}")
    cnn_f = _Features(cnn)
    res_f = _Features(ratios["dre"].feature_net)
    stats_cnn = feature_statistics(extract_features(cnn_f, test.float(), batch_size=500, progress=False))
    stats_res = feature_statistics(extract_features(res_f, test.float(), batch_size=500, progress=False))
    inception = None
    inception_note = "not computed: the FID Inception weights are not available here (pass --inception-weights)"
    try:
        from refine.metrics.inception import inception_features, load_inception

        inception = load_inception(args.inception_weights)
        stats_inc = feature_statistics(
            inception_features(inception, test.float().repeat(1, 3, 1, 1), value_range=(-1, 1), progress=False)
        )
        inception_note = "computed"
    except Exception as e:  # noqa: BLE001 - a missing weight file is the expected case here
        log(f"Inception FID skipped: {str(e).splitlines()[0][:200]}")

    def score(x: torch.Tensor) -> dict:
        out = {
            "fid_cnn": frechet_distance(
                *stats_cnn, *feature_statistics(extract_features(cnn_f, x, batch_size=500, progress=False))
            ),
            "fid_resnet": frechet_distance(
                *stats_res, *feature_statistics(extract_features(res_f, x, batch_size=500, progress=False))
            ),
        }
        with torch.no_grad():
            p = torch.cat([torch.softmax(cnn(x[i : i + 1000]), 1) for i in range(0, len(x), 1000)])
        hist = torch.bincount(p.argmax(1), minlength=10).double() / len(x)
        out["confidence"] = float(p.max(1).values.mean())  # mean top-class probability: how digit-like the samples are
        out["class_kl"] = float(
            (hist * (hist.clamp_min(1e-12) / 0.1).log()).sum()
        )  # KL(class histogram || uniform): mode balance
        if inception is not None:
            f = inception_features(inception, x.repeat(1, 3, 1, 1), value_range=(-1, 1), progress=False)
            out["fid_inception"] = frechet_distance(*stats_inc, *feature_statistics(f))
        return out

    rows = []
    # Floor: n real training images against the test set (the FID estimator's bias at this n).
    from refine.data.images import load_images

    real_n = load_images(
        f"mnist:{args.mnist}", split="train", limit=args.n, rng=torch.Generator().manual_seed(99)
    ).float()
    rows.append({"method": f"real training images (n={args.n}, reference floor)", "ratio": None, **score(real_n)})
    log(json.dumps(rows[-1]))
    grids = {"real": real_n[:64]}
    only = set(args.methods.split(",")) if args.methods else None
    for label, rname, method, opts in METHODS:
        if only and label not in only and method not in only:
            continue
        sampler = get_sampler(method, **opts)
        target = LatentTarget(gan.generator, ratios[rname] if rname else None)
        rng = torch.Generator().manual_seed(args.seed)
        t0 = time.perf_counter()
        try:
            res = sampler.sample(target, args.n, rng=rng, progress=args.progress)
        except Exception as e:  # noqa: BLE001 - a sampler that fails (budget) is a result, not a crash
            rows.append({"method": label, "ratio": rname, "error": str(e).splitlines()[0]})
            log(json.dumps(rows[-1]))
            continue
        info = res.info
        row = {
            "method": label,
            "ratio": {"d": "discriminator (refitted, logistic)", "dre": "DRE-F-SP"}.get(rname),
            "sampler": method,
            "options": sampler.options(),
            **score(res.x),
            "wall_time_s": time.perf_counter() - t0,
            "g_evals_per_sample": info.get("g_evals_per_sample"),
            "ratio_evals_per_sample": info.get("d_evals_per_sample"),
            "acceptance_rate": info.get("acceptance_rate"),
        }
        rows.append(row)
        grids[label] = res.x[:64]
        log(json.dumps(row))
    # The FID estimator's spread at this n: the raw generator with other seeds.
    spread = None
    if args.raw_seeds > 0:
        fids = []
        for k in range(1, args.raw_seeds + 1):
            res = get_sampler("none").sample(
                LatentTarget(gan.generator), args.n, rng=torch.Generator().manual_seed(args.seed + k)
            )
            fids.append(score(res.x)["fid_cnn"])
        spread = {
            "seeds": [args.seed + k for k in range(1, args.raw_seeds + 1)],
            "fid_cnn": fids,
            "mean": float(np.mean(fids)),
            "std": float(np.std(fids, ddof=1)) if len(fids) > 1 else 0.0,
        }
        log(f"raw generator FID over seeds {spread['seeds']}: {spread['mean']:.2f} +- {spread['std']:.2f}")
    raw = next((r for r in rows if r["method"] == "raw generator"), None)
    if raw is not None:
        for r in rows[1:]:
            if "fid_cnn" in r:
                r["fid_cnn_reduction"] = (raw["fid_cnn"] - r["fid_cnn"]) / raw["fid_cnn"]
    record = {
        "benchmark": "mnist",
        "date": today(),
        "machine": machine(),
        "threads": args.threads,
        "n": args.n,
        "seed": args.seed,
        "command": "python benchmarks/mnist.py " + " ".join(sys.argv[1:]),
        "evaluator": {
            "network": "small CNN (conv32-pool-conv64-pool-fc128-fc10), trained 1 epoch on the 60,000 MNIST training images",
            "test_accuracy": acc,
            "features": "128-d penultimate layer",
            "reference": "10,000 MNIST test images",
        },
        "inception_fid": inception_note,
        "raw_fid_other_seeds": spread,
        "files": {
            k: {"path": str(v), "sha256": file_sha256(v)} if v != "checkpoint" else "the GAN checkpoint's discriminator"
            for k, v in files.items()
        },
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(record, out.with_suffix(".json"))
    cols = [
        "method",
        "fid_cnn",
        "fid_cnn_reduction",
        "fid_resnet",
        "confidence",
        "class_kl",
        "acceptance_rate",
        "g_evals_per_sample",
        "wall_time_s",
    ]
    if inception is not None:
        cols.insert(4, "fid_inception")

    def fmt(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    md = [
        f"MNIST, n = {args.n} samples per method, seed {args.seed}; {machine()}, {args.threads} thread(s); {today()}.",
        f"FID in the 128-d feature space of a small CNN trained on MNIST (test accuracy {acc:.4f}) against the 10,000 test images; "
        f"fid_resnet: in the DRE-F-SP feature network's space. Inception FID: {inception_note}."
        + (
            f" Spread of the estimate: the raw generator with seeds {spread['seeds']} scores fid_cnn {spread['mean']:.2f} ± {spread['std']:.2f}."
            if spread
            else ""
        ),
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for r in rows:
        md.append("| " + " | ".join(fmt(r.get(c)) if c != "fid_cnn_reduction" or c in r else "–" for c in cols) + " |")
    with atomic_write(out.with_suffix(".md"), "w") as f:
        f.write("\n".join(md) + "\n")
    save_image_panels(out.with_suffix(".png"), {k: to_uint8(v, "[-1,1]") for k, v in grids.items()}, cols=5)
    log("\n".join(md))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the shipped MNIST files with the CLI and record them in the manifest")
    t.add_argument(
        "--mnist", default=DEFAULT_MNIST, help="folder with the four MNIST files (default ../shared/data/mnist)"
    )
    t.add_argument("--skip-gan", action="store_true", help="reuse benchmarks/_work/mnist/mnist_dcgan_train.pt")
    e = sub.add_parser("eval", help="score the shipped files; writes benchmarks/results/mnist.*")
    e.add_argument("--mnist", default=DEFAULT_MNIST)
    e.add_argument("--n", type=int, default=2000, help="samples per method")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--methods", default="", help="comma-separated labels or sampler names to run (default: all)")
    e.add_argument("--inception-weights", default=None)
    e.add_argument("--progress", action="store_true")
    e.add_argument(
        "--raw-seeds",
        type=int,
        default=3,
        help="also score the raw generator with this many other seeds (spread of the FID estimate)",
    )
    e.add_argument("--gan", default=None, help="GAN checkpoint to score (default: the shipped one)")
    e.add_argument(
        "--d-ratio", default=None, help="discriminator ratio file, or 'checkpoint' for the GAN's own discriminator"
    )
    e.add_argument("--dre", default=None, help="feature-sp ratio file")
    e.add_argument("--out", default=str(RESULTS / "mnist"), help="result files prefix (.json, .md, .png)")
    args = p.parse_args()
    if not Path(REPO / args.mnist if not os.path.isabs(args.mnist) else args.mnist).is_dir():
        p.error(f"MNIST folder {args.mnist} not found; pass --mnist")
    os.chdir(REPO)
    train(args) if args.cmd == "train" else evaluate(args)


if __name__ == "__main__":
    main()
