"""Class-conditional refinement on MNIST: raw vs per-class refinement with the conditional discriminator ratio and with cDR-RS's conditional feature-space ratio.

    python benchmarks/conditional_mnist.py [--mnist ../shared/data/mnist] [--n-per-class 200] [--quick]

Steps, all through refine's entry points and all seeded:

1. An evaluation classifier (``refine train-classifier``: a narrow
   ResNet-34 at a quarter of the standard width, 20,000 training images, 3 epochs, seed 0). Its 128-d features are the space the
   intra-FD is measured in, and its argmax gives the label accuracy. It is not the network the
   ratio is read from (the conditional discriminator), so the refinement does not optimise the
   measure directly.
2. ``refine train --method cgan`` (class-conditional DCGAN generator with conditional BatchNorm,
   projection discriminator with spectral norm, hinge loss) on 20,000 MNIST training images.
3. The discriminator refitted with the logistic loss against the final generator
   (``refine.train.cgan.fit_conditional_discriminator``, 1 epoch), so that its logit estimates
   ``log p(x | y) / p_G(x | y)`` (the hinge loss does not make it one).
4. For each method (raw ``none``, ``drs``, exact ``rs``, ``sir``), ``refine.sample`` on the
   conditional target with ``classes="balanced"``: exactly ``--n-per-class`` samples per class,
   each class with its own bound (``log M_y``) and its own seed. Scored against the 10,000
   MNIST test images: intra-FD (mean over classes of the per-class Fréchet distance), the pooled
   FD, label accuracy, the class counts and the G/D passes per sample and wall time.
5. cDR-RS's conditional feature-space ratio (``refine fit-ratio --kind feature-sp --conditional``):
   its own ResNet-34 feature network (a quarter of the standard width, stem stride 2, seed 1,
   trained 2 epochs as a classifier on the same 20,000 images; not the evaluation classifier) and
   one head ``h([e(y), phi(x)])`` for all classes, trained with the SP loss class by class. Then
   per-class ``rs`` with ``m_quantile`` 0.99, exact ``rs`` and ``sir`` with it, scored the same
   way; the fitting time and the ratio file's size (storage) are recorded beside the
   discriminator's.

Results: ``benchmarks/results/conditional_mnist.json`` and ``.md`` (generated from the JSON).
Intermediate files (classifier, checkpoint) go to ``benchmarks/_work/conditional_mnist``; they are
reused when present (delete the folder to retrain).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

WORK = REPO / "benchmarks" / "_work" / "conditional_mnist"
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_MNIST = os.path.relpath(Path(os.environ.get("REFINE_SHARED", REPO.parent / "shared")) / "data" / "mnist", REPO)
SEED = 0
METHODS = (("none", {}), ("drs", {}), ("rs", {"budget": 200.0}), ("sir", {"candidates": 20}))
#: Methods run with cDR-RS's conditional feature-space ratio.
CDRE_METHODS = (("rs", {"m_quantile": 0.99}), ("rs", {"budget": 200.0}), ("sir", {"candidates": 20}))
D_RATIO = "D(x, y), refitted"
CDRE_RATIO = "cDR-RS feature"


def _prepare(args, work: Path) -> tuple[Path, Path, dict]:
    from common import run_python

    clf, ckpt, timings = work / "mnist_clf.pt", work / "cgan.pt", {}
    if not clf.is_file():
        t0 = time.perf_counter()
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
                str(args.clf_train),
                "--epochs",
                str(args.clf_epochs),
                "--seed",
                str(SEED),
                "--device",
                "cpu",
            ]
        )
        timings["classifier_s"] = time.perf_counter() - t0
    if not ckpt.is_file():
        t0 = time.perf_counter()
        run_python(
            [
                "-m",
                "refine",
                "train",
                "--method",
                "cgan",
                "--data",
                f"mnist:{args.mnist}",
                "--n-train",
                str(args.n_train),
                "--epochs",
                str(args.epochs),
                "--batch-size",
                "64",
                "--width",
                str(args.width),
                "--d-width",
                str(args.width),
                "--latent-dim",
                "64",
                "--seed",
                str(SEED),
                "--device",
                "cpu",
                "--out",
                str(ckpt),
                "--no-progress",
            ]
        )
        timings["train_s"] = time.perf_counter() - t0
    return clf, ckpt, timings


def _fit_cdre(args, work: Path, ckpt: Path) -> tuple[Path, float]:
    """``refine fit-ratio --kind feature-sp --conditional`` for the checkpoint (reused when present); returns (file, seconds)."""
    from common import run_python

    out = work / "cdre.safetensors"
    if out.is_file():
        return out, float("nan")
    t0 = time.perf_counter()
    run_python(
        [
            "-m",
            "refine",
            "fit-ratio",
            "--ckpt",
            str(ckpt),
            "--kind",
            "feature-sp",
            "--conditional",
            "--data",
            f"mnist:{args.mnist}",
            "--n-train",
            str(args.n_train),
            "--n-val",
            str(args.cdre_val),
            "--feature-epochs",
            str(args.cdre_feature_epochs),
            "--feature-widths",
            args.cdre_widths,
            "--feature-dim",
            "128",
            "--stem-stride",
            "2",
            "--epochs",
            str(args.cdre_epochs),
            "--batch-size",
            "256",
            "--seed",
            "1",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    return out, time.perf_counter() - t0


def main() -> None:
    import numpy as np
    import torch
    from common import machine, today

    import refine
    from refine.data.images import load_images
    from refine.errors import BudgetExceededError
    from refine.eval import classifier_space, to_uint8
    from refine.io import atomic_write, write_json
    from refine.metrics.fid import fid_from_features
    from refine.metrics.intra import intra_scores
    from refine.train.cgan import fit_conditional_discriminator

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--mnist", default=DEFAULT_MNIST, help="folder with the four MNIST files (default ../shared/data/mnist)"
    )
    p.add_argument("--n-per-class", type=int, default=200)
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--clf-train", type=int, default=20000)
    p.add_argument("--clf-epochs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--cdre-feature-epochs", type=int, default=2)
    p.add_argument("--cdre-epochs", type=int, default=20)
    p.add_argument("--cdre-val", type=int, default=2000)
    p.add_argument("--cdre-widths", default="16,32,64,128")
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: tiny networks, 20 samples per class, results not written"
    )
    args = p.parse_args()
    if args.quick:
        args.n_per_class, args.n_train, args.clf_train, args.clf_epochs, args.epochs, args.width = (
            20,
            1024,
            1024,
            1,
            1,
            8,
        )
        args.cdre_feature_epochs, args.cdre_epochs, args.cdre_val, args.cdre_widths = 1, 2, 200, "4,4,8,8"
    os.chdir(REPO)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = WORK / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    clf, ckpt, timings = _prepare(args, work)

    space = classifier_space(clf)
    test = load_images(f"mnist:{args.mnist}", split="test")
    real_f, _ = space.extract(test.images, batch_size=500)
    real_y = test.labels

    gan = refine.load_gan(ckpt)
    t0 = time.perf_counter()
    refit = fit_conditional_discriminator(
        gan.generator,
        gan.discriminator,
        load_images(f"mnist:{args.mnist}", split="train", limit=args.n_train, rng=torch.Generator().manual_seed(SEED)),
        epochs=1,
        batch_size=128,
        rng=torch.Generator().manual_seed(SEED),
    )
    timings["refit_d_s"] = time.perf_counter() - t0
    meta = gan.config.get("meta", {})
    target = refine.wrap(
        gan.generator.net,
        prior=gan.generator.prior,
        output_range="[-1,1]",
        num_classes=gan.generator.num_classes,
        discriminator=gan.discriminator,
        output="logit",
    )
    k = target.num_classes
    n = args.n_per_class * k
    cdre_path, cdre_fit_s = _fit_cdre(args, work, ckpt)
    cdre_meta = refine.io.safe_load(cdre_path, what="ratio file")["meta"]
    cdre = refine.load_ratio(cdre_path)
    cdre_target = refine.wrap(
        gan.generator.net,
        prior=gan.generator.prior,
        output_range="[-1,1]",
        num_classes=k,
        ratio=cdre,
    )
    d_size = sum(t.numel() * t.element_size() for t in gan.discriminator.state_dict().values())
    ratios = {
        D_RATIO: {
            "kind": "the checkpoint's projection discriminator, refitted 1 epoch with the logistic loss",
            "fit_time_s": timings["refit_d_s"],
            "weights_bytes": d_size,
        },
        CDRE_RATIO: {
            "kind": "feature-sp-conditional (refine fit-ratio --kind feature-sp --conditional)",
            "file": cdre_path.name,
            "file_bytes": cdre_path.stat().st_size,
            "fit_time_s": cdre_meta.get("fit_time_s"),
            "fit_command_s": None if cdre_fit_s != cdre_fit_s else cdre_fit_s,
            "feature_net_val_acc": cdre_meta["feature_net"].get("val_acc"),
            "feature_net_train_s": cdre_meta["feature_net"].get("train_time_s"),
            "head_train_s": cdre_meta["head"].get("train_time_s"),
            "lambda": cdre_meta["head"]["lambda"],
            "normalised": cdre_meta["head"]["normalised"],
            "val_mean_r_fake": cdre_meta["head"]["val_mean_r_fake"],
            "val_mean_r_fake_per_class": cdre_meta["head"].get("val_mean_r_fake_per_class"),
        },
    }
    rows = []
    runs = [(D_RATIO, target, m, o) for m, o in METHODS] + [(CDRE_RATIO, cdre_target, m, o) for m, o in CDRE_METHODS]
    for ratio_name, tgt, method, opts in runs:
        t0 = time.perf_counter()
        try:
            res = refine.sample(tgt, method, n, rng=torch.Generator().manual_seed(SEED), classes="balanced", **opts)
        except BudgetExceededError as e:
            rows.append({"method": method, "ratio": ratio_name, "options": opts, "refused": str(e)})
            continue
        wall = time.perf_counter() - t0
        feats, logits = space.extract(to_uint8(res.x, "[-1,1]"), batch_size=500)
        scores = intra_scores(feats, logits, res.y, real_f, real_y)
        counts = {str(c): int((res.y == c).sum()) for c in range(k)}
        per = res.info["per_class"]
        rows.append(
            {
                "method": method,
                "ratio": None if method == "none" else ratio_name,
                "options": opts,
                "n": n,
                "wall_s": wall,
                "counts": counts,
                "exact_proportions": all(v == args.n_per_class for v in counts.values()),
                "intra_fd": scores["intra_fd"],
                "fd_pooled": float(fid_from_features(feats.double().numpy(), real_f.double().numpy())),
                "label_accuracy": scores["label_accuracy"],
                "per_class": scores["per_class"],
                "proposals_per_sample": res.info.get("proposals_per_sample"),
                "g_evals_per_sample": res.info.get("g_evals_per_sample"),
                "d_evals_per_sample": res.info.get("d_evals_per_sample"),
                "log_M_per_class": {c: i.get("log_M") for c, i in per.items()} if method in ("rs", "drs") else None,
                "acceptance_per_class": {c: i.get("acceptance_rate") for c, i in per.items()}
                if method in ("rs", "drs")
                else None,
            }
        )
        print(
            f"{method} [{ratio_name}] {opts}: intra-FD {scores['intra_fd']:.2f}, accuracy {scores['label_accuracy']:.4f}, {wall:.1f}s",
            flush=True,
        )
    raw = next(r for r in rows if r["method"] == "none")
    for r in rows:
        if "intra_fd" in r:
            r["intra_fd_change_vs_raw"] = r["intra_fd"] / raw["intra_fd"] - 1
    result = {
        "benchmark": "conditional_mnist",
        "machine": machine(),
        "torch": torch.__version__,
        "date": today(),
        "seed": SEED,
        "command": f"python benchmarks/conditional_mnist.py {' '.join(sys.argv[1:])}".strip(),
        "settings": {
            "n_per_class": args.n_per_class,
            "n_train": args.n_train,
            "epochs": args.epochs,
            "width": args.width,
            "clf_train": args.clf_train,
            "clf_epochs": args.clf_epochs,
            "loss": "hinge",
            "latent_dim": 64,
            "num_classes": k,
            "cdre": {
                "feature_widths": args.cdre_widths,
                "feature_dim": 128,
                "stem_stride": 2,
                "feature_epochs": args.cdre_feature_epochs,
                "head_epochs": args.cdre_epochs,
                "n_val": args.cdre_val,
                "seed": 1,
            },
        },
        "feature_space": space.network,
        "classifier_test_accuracy": None,
        "gan": {"history": meta.get("history"), "refit_d": refit},
        "timings_s": {**timings, "total": time.perf_counter() - t_all},
        "ratios": ratios,
        "aim": "cDR-RS ratio: mean intra-FD cut by >= 30% vs raw in the evaluation classifier's space, label accuracy raised, class proportions exact",
        "methods": rows,
    }
    with torch.no_grad():
        _, real_logits = space.extract(test.images[:2000], batch_size=500)
    result["classifier_test_accuracy"] = float((real_logits.argmax(1) == real_y[:2000]).double().mean())
    if args.quick:
        print(
            json.dumps(
                [
                    {
                        k2: r.get(k2)
                        for k2 in (
                            "method",
                            "ratio",
                            "options",
                            "intra_fd",
                            "label_accuracy",
                            "exact_proportions",
                            "refused",
                        )
                    }
                    for r in rows
                ],
                indent=1,
            )
        )
        return
    write_json(result, RESULTS / "conditional_mnist.json")
    with atomic_write(RESULTS / "conditional_mnist.md", "w") as f:
        f.write(render(result))
    print((RESULTS / "conditional_mnist.md").read_text())
    del np


def _short(r: dict) -> str:
    """A column name for a method row: the method, its options and, for cDR-RS, the ratio."""
    opts = ",".join(f"{k}={v:g}" for k, v in r["options"].items() if k != "budget")
    name = r["method"] + (f" ({opts})" if opts else "")
    return name + (" cDR-RS" if r.get("ratio") == CDRE_RATIO else "")


def render(result: dict) -> str:
    """The Markdown report, generated from the JSON results."""
    s = result["settings"]
    lines = [
        "# Class-conditional refinement on MNIST",
        "",
        f"{result['machine']}; {result['date']}; seed {result['seed']}. Generated by `{result['command']}` "
        f"from `benchmarks/results/conditional_mnist.json`.",
        "",
        f"cgan (conditional BatchNorm generator, projection discriminator with spectral norm, {s['loss']} loss), width {s['width']}, "
        f"latent {s['latent_dim']}, {s['epochs']} epochs on {s['n_train']} training images; the discriminator refitted with the logistic loss "
        f"for 1 epoch; ratio: its logit as log r(x | y), or cDR-RS's conditional feature-space ratio. {s['n_per_class']} samples per class ({s['n_per_class'] * s['num_classes']} in all), "
        f"classes='balanced'.",
        "",
        f"Feature space (not the ratio's): {result['feature_space']}; its accuracy on 2,000 MNIST test images: "
        f"{result['classifier_test_accuracy']:.4f}. Reference: the 10,000 MNIST test images, per class.",
        "",
        "| method | ratio | intra-FD | vs raw | pooled FD | label accuracy | exact proportions | proposals / sample | ratio passes / sample | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["methods"]:
        name = f"{r['method']} {json.dumps(r['options']) if r['options'] else ''}"
        ratio = r.get("ratio") or ("" if r["method"] == "none" else D_RATIO)
        if "refused" in r:
            lines.append(f"| {name} | {ratio} | refused: {r['refused']} | | | | | | | |")
            continue
        pps = r.get("proposals_per_sample")
        dps = r.get("d_evals_per_sample")
        lines.append(
            f"| {name} | {ratio} | {r['intra_fd']:.2f} | {100 * r['intra_fd_change_vs_raw']:+.1f}% | "
            f"{r['fd_pooled']:.2f} | {r['label_accuracy']:.4f} | {'yes' if r['exact_proportions'] else 'NO'} | "
            f"{'' if pps is None else f'{pps:.2f}'} | {'' if dps is None else f'{dps:.2f}'} | {r['wall_s']:.1f} |"
        )
    if result.get("ratios"):
        lines += [
            "",
            "The two conditional ratios (one model for all classes each):",
            "",
            "| ratio | what | fitting time (s) | storage |",
            "|---|---|---|---|",
        ]
        for name, info in result["ratios"].items():
            size = info.get("file_bytes") or info.get("weights_bytes")
            what = "ratio file" if info.get("file_bytes") else "weights"
            lines.append(f"| {name} | {info['kind']} | {info['fit_time_s']:.0f} | {size / 2**20:.2f} MiB ({what}) |")
        c = result["ratios"].get(CDRE_RATIO)
        if c:
            per = c.get("val_mean_r_fake_per_class") or {}
            lines += [
                "",
                f"cDR-RS ratio: feature network validation accuracy {c['feature_net_val_acc']:.4f} (feature network {c['feature_net_train_s']:.0f} s, "
                f"heads {c['head_train_s']:.0f} s), lambda {c['lambda']:g}, E_G(.|y)[r] on validation generated images "
                f"{c['val_mean_r_fake']:.3f} averaged over classes ({'normalised' if c['normalised'] else 'not normalised'}; per class "
                + ", ".join(f"{k}: {v:.2f}" for k, v in per.items())
                + ").",
            ]
    lines += [
        "",
        "Per class (intra-FD / label accuracy):",
        "",
        "| class | " + " | ".join(_short(r) for r in result["methods"] if "per_class" in r) + " |",
        "|---" * (1 + sum("per_class" in r for r in result["methods"])) + "|",
    ]
    scored = [r for r in result["methods"] if "per_class" in r]
    for i, row in enumerate(scored[0]["per_class"]):
        cells = [f"{r['per_class'][i]['fd']:.2f} / {r['per_class'][i]['accuracy']:.3f}" for r in scored]
        lines.append(f"| {row['class']} | " + " | ".join(cells) + " |")
    for r in scored:
        if r["method"] == "rs" and r.get("log_M_per_class") and not r["options"].get("m_quantile"):
            lines += [
                "",
                f"Bound per class of exact rs with {r.get('ratio') or D_RATIO} (log M_y, the burn-in maximum raised online): "
                + ", ".join(f"{c}: {v:.2f}" for c, v in r["log_M_per_class"].items()),
            ]
    t = result["timings_s"]
    lines += ["", "Time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
