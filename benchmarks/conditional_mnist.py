"""Class-conditional refinement on MNIST: the shipped conditional pair, raw vs per-class refinement with its two conditional ratios.

    python benchmarks/conditional_mnist.py [--mnist ../shared/data/mnist] [--n-per-class 500] [--quick]

The pair and its ratios are the shipped files (``benchmarks/make_pretrained_cgan.py`` makes them):
``pretrained/mnist_cgan.safetensors`` (cgan: conditional BatchNorm generator, projection
discriminator with spectral norm, hinge loss), ``mnist_cgan_d_ratio.safetensors`` (its
discriminator refitted with the logistic loss and calibrated per class, ``refine fit-ratio
--conditional``) and ``mnist_cgan_cdre.safetensors`` (cDR-RS's conditional feature-space ratio,
``refine fit-ratio --kind feature-sp --conditional``). Steps, all seeded:

1. An evaluation classifier (``refine train-classifier``: a narrow ResNet-34 at a quarter of
   the standard width, 20,000 training images, 3 epochs, seed 0). Its 128-d features are the
   space the intra-FD is measured in, and its argmax gives the label accuracy. It is not a
   network any ratio is read from, so the refinement does not optimise the measure directly.
2. For each ratio and method, ``refine.sample`` on the conditional target with
   ``classes="balanced"``: exactly ``--n-per-class`` samples per class, each class with its own
   bound (``log M_y``) and its own seed. The checkpoint's own discriminator as trained (hinge
   loss) is run too, with ``drs``, to show what the refit changes. Scored against the 10,000 MNIST
   test images: intra-FD (mean over classes of the per-class Fréchet distance), the pooled FD,
   label accuracy, the class counts, the G/D passes per sample and wall time.
3. The fitting time and storage of each ratio, from the ratio files' records.

``--quick`` makes tiny versions of the three files with the same commands in
``benchmarks/_work/conditional_mnist/quick`` and writes no results.

Results: ``benchmarks/results/conditional_mnist.json`` and ``.md`` (generated from the JSON).
The classifier goes to ``benchmarks/_work/conditional_mnist``; it is reused when present.
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
AS_TRAINED = "D(x, y), as trained (hinge)"
D_RATIO = "D(x, y), refitted, calibrated per class"
CDRE_RATIO = "cDR-RS feature"
#: The first row: real training images, as many per class, scored the same way (the floor at this n).
REAL = "real training images (floor)"
#: (ratio, method, options) in the order of the table.
RUNS = (
    (None, "none", {}),
    (AS_TRAINED, "drs", {}),
    (D_RATIO, "drs", {}),
    (D_RATIO, "rs", {"budget": 200.0, "m_quantile": 1.0}),
    (D_RATIO, "sir", {"candidates": 20}),
    (CDRE_RATIO, "rs", {"m_quantile": 0.99}),
    (CDRE_RATIO, "rs", {"budget": 200.0, "m_quantile": 1.0}),
    (CDRE_RATIO, "sir", {"candidates": 20}),
)


def _classifier(args, work: Path) -> tuple[Path, float | None]:
    from common import run_python

    clf = work / "mnist_clf.pt"
    if clf.is_file():
        return clf, None
    t0 = time.perf_counter()
    run_python(
        ["-m", "refine", "train-classifier", "--data", f"mnist:{args.mnist}", "--out", str(clf),
         "--n-train", str(args.clf_train), "--epochs", str(args.clf_epochs), "--seed", str(SEED), "--device", "cpu"]
    )  # fmt: skip
    return clf, time.perf_counter() - t0


def _quick_files(args, work: Path) -> tuple[Path, Path, Path]:
    """Tiny versions of the shipped files, made with the same commands (a smoke run of the whole script)."""
    from common import refine_cli

    data, run = f"mnist:{args.mnist}", ["--seed", "0", "--device", "cpu", "--no-progress"]
    ckpt, d_ratio, cdre = work / "cgan.pt", work / "cd.safetensors", work / "cdre.safetensors"
    if not ckpt.is_file():
        refine_cli(["train", "--method", "cgan", "--data", data, "--n-train", "1024", "--epochs", "1", "--batch-size", "64",
                    "--width", "8", "--d-width", "8", "--latent-dim", "16", "--out", str(ckpt), *run])  # fmt: skip
    if not d_ratio.is_file():
        refine_cli(["fit-ratio", "--ckpt", str(ckpt), "--conditional", "--data", data, "--n-train", "1024", "--epochs", "1",
                    "--batch-size", "64", "--calibration", "logistic", "--n-calib", "400", "--out", str(d_ratio), *run])  # fmt: skip
    if not cdre.is_file():
        refine_cli(["fit-ratio", "--ckpt", str(ckpt), "--conditional", "--kind", "feature-sp", "--data", data, "--n-train",
                    "1024", "--n-val", "200", "--feature-widths", "4,4,8,8", "--feature-dim", "8", "--stem-stride", "2",
                    "--feature-epochs", "1", "--head-hidden", "16", "--epochs", "2", "--batch-size", "64", "--out", str(cdre), *run])  # fmt: skip
    return ckpt, d_ratio, cdre


def evaluate(data: str, ckpt: Path, d_path: Path, cdre_path: Path, clf: Path, *, n_per_class: int, name: str) -> dict:
    """Every run of :data:`RUNS` for the conditional pair ``ckpt`` and its two ratio files, scored per class
    in the classifier ``clf``'s feature space against the test split of ``data`` (a ``NAME:ROOT`` spec)."""
    import torch
    from common import machine, today

    import refine
    from refine.data.images import load_images
    from refine.errors import BudgetExceededError
    from refine.eval import classifier_space, to_uint8
    from refine.io import file_sha256, safe_load
    from refine.metrics.fid import fid_from_features
    from refine.metrics.intra import intra_scores

    t_all = time.perf_counter()
    space = classifier_space(clf)
    gan = refine.load_gan(ckpt)
    g = gan.generator
    k = g.num_classes
    size = int(g.at(0).sample(1, rng=torch.Generator().manual_seed(0))[1].shape[-1])
    test = load_images(data, split="test", image_size=size, channels=int(g.at(0).sample(1)[1].shape[1]))
    real_f, real_logits = space.extract(test.images, batch_size=500)
    real_y = test.labels
    n = n_per_class * k
    targets = {
        label: refine.wrap(g.net, prior=g.prior, output_range="[-1,1]", num_classes=k, **kw)
        for label, kw in (
            (AS_TRAINED, {"discriminator": gan.discriminator, "output": "logit"}),
            (D_RATIO, {"ratio": refine.load_ratio(d_path)}),
            (CDRE_RATIO, {"ratio": refine.load_ratio(cdre_path)}),
        )
    }
    metas = {
        D_RATIO: safe_load(d_path, what="ratio file")["meta"],
        CDRE_RATIO: safe_load(cdre_path, what="ratio file")["meta"],
    }
    cm = metas[CDRE_RATIO]
    ratios = {
        D_RATIO: {
            "kind": "discriminator-conditional (refine fit-ratio --conditional)",
            "file": str(d_path),
            "file_bytes": d_path.stat().st_size,
            "fit_time_s": metas[D_RATIO]["fit_time_s"],
            "refit_history": metas[D_RATIO]["history"],
            "calibration_per_class": {
                c: {w: r[w] for w in ("before", "after")} for c, r in metas[D_RATIO]["calibration"]["per_class"].items()
            },
        },
        CDRE_RATIO: {
            "kind": "feature-sp-conditional (refine fit-ratio --kind feature-sp --conditional)",
            "file": str(cdre_path),
            "file_bytes": cdre_path.stat().st_size,
            "fit_time_s": cm.get("fit_time_s"),
            "feature_net_val_acc": cm["feature_net"].get("val_acc"),
            "feature_net_train_s": cm["feature_net"].get("train_time_s"),
            "head_train_s": cm["head"].get("train_time_s"),
            "lambda": cm["head"]["lambda"],
            "normalised": cm["head"]["normalised"],
            "val_mean_r_fake": cm["head"]["val_mean_r_fake"],
            "val_mean_r_fake_per_class": cm["head"].get("val_mean_r_fake_per_class"),
        },
    }
    # the floor: as many real training images per class, scored the same way (the distances' bias at this n)
    train = load_images(
        data,
        split="train",
        image_size=size,
        channels=int(test.images.shape[1]),
        rng=torch.Generator().manual_seed(SEED),
    )
    pick = torch.cat([torch.nonzero(train.labels == c)[:n_per_class, 0] for c in range(k)])
    feats, logits = space.extract(train.images[pick], batch_size=500)
    floor = intra_scores(feats, logits, train.labels[pick], real_f, real_y)
    rows = [
        {
            "method": REAL,
            "ratio": None,
            "options": {},
            "n": int(len(pick)),
            "intra_fd": floor["intra_fd"],
            "fd_pooled": float(fid_from_features(feats.double().numpy(), real_f.double().numpy())),
            "label_accuracy": floor["label_accuracy"],
            "per_class": floor["per_class"],
            "counts": {str(c): int((train.labels[pick] == c).sum()) for c in range(k)},
            "exact_proportions": True,
        }
    ]
    for ratio_name, method, opts in RUNS:
        tgt = targets[ratio_name or AS_TRAINED]
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
                "ratio": ratio_name,
                "options": opts,
                "n": n,
                "wall_s": wall,
                "counts": counts,
                "exact_proportions": all(v == n_per_class for v in counts.values()),
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
        if "intra_fd" in r and r["method"] != REAL:
            r["intra_fd_change_vs_raw"] = r["intra_fd"] / raw["intra_fd"] - 1
    gmeta = gan.config.get("meta", {})
    return {
        "benchmark": name,
        "machine": machine(),
        "torch": torch.__version__,
        "date": today(),
        "seed": SEED,
        "command": f"python benchmarks/{name}.py {' '.join(sys.argv[1:])}".strip(),
        "settings": {"n_per_class": n_per_class, "num_classes": k, "data": data},
        "checkpoint": {
            "path": str(ckpt),
            "sha256": file_sha256(ckpt),
            "generator": gan.config["generator"]["arch"],
            "discriminator": gan.config["discriminator"]["arch"],
            "epochs": len(gmeta.get("history") or []),
            "n_train": gmeta.get("n_train"),
            "method_options": gmeta.get("method_options"),
        },
        "feature_space": space.network,
        "classifier_test_accuracy": float((real_logits.argmax(1) == real_y).double().mean()),
        "n_test": len(real_y),
        "gan": {"history": gmeta.get("history")},
        "timings_s": {"evaluation": time.perf_counter() - t_all},
        "ratios": ratios,
        "aim": "cDR-RS ratio: mean intra-FD cut by >= 30% vs raw in the evaluation classifier's space, label accuracy raised, class proportions exact",
        "methods": rows,
    }


def write(result: dict, name: str) -> None:
    """``benchmarks/results/NAME.json`` and the Markdown report generated from it."""
    from common import write_results

    write_results(name, result, render(result))


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--mnist", default=DEFAULT_MNIST, help="folder with the four MNIST files (default ../shared/data/mnist)"
    )
    p.add_argument("--n-per-class", type=int, default=500)
    p.add_argument("--clf-train", type=int, default=20000)
    p.add_argument("--clf-epochs", type=int, default=3)
    p.add_argument("--ckpt", default="pretrained/mnist_cgan.safetensors")
    p.add_argument("--d-ratio", default="pretrained/mnist_cgan_d_ratio.safetensors")
    p.add_argument("--cdre", default="pretrained/mnist_cgan_cdre.safetensors")
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: tiny networks, 20 samples per class, results not written"
    )
    args = p.parse_args()
    os.chdir(REPO)
    torch.set_num_threads(1)
    work = WORK / "quick" if args.quick else WORK
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    if args.quick:
        args.n_per_class, args.clf_train, args.clf_epochs = 20, 1024, 1
        ckpt, d_path, cdre_path = _quick_files(args, work)
    else:
        ckpt, d_path, cdre_path = Path(args.ckpt), Path(args.d_ratio), Path(args.cdre)
    clf, clf_s = _classifier(args, work)
    result = evaluate(
        f"mnist:{args.mnist}", ckpt, d_path, cdre_path, clf, n_per_class=args.n_per_class, name="conditional_mnist"
    )
    result["settings"].update(clf_train=args.clf_train, clf_epochs=args.clf_epochs)
    result["timings_s"].update(
        {**({"classifier": clf_s} if clf_s is not None else {}), "total": time.perf_counter() - t_all}
    )
    if args.quick:
        keys = ("method", "ratio", "options", "intra_fd", "label_accuracy", "exact_proportions", "refused")
        print(json.dumps([{k2: r.get(k2) for k2 in keys} for r in result["methods"]], indent=1))
        return
    write(result, "conditional_mnist")


def _short(r: dict) -> str:
    """A column name for a method row: the method, its options and which ratio."""
    opts = ",".join(f"{k}={v:g}" for k, v in r["options"].items() if k != "budget")
    name = r["method"] + (f" ({opts})" if opts else "")
    tag = {CDRE_RATIO: " cDR-RS", AS_TRAINED: " D as trained", D_RATIO: " D refitted"}.get(r.get("ratio"), "")
    return name + tag


def render(result: dict) -> str:
    """The Markdown report, generated from the JSON results."""
    from common import ran_options

    result = {**result, "methods": [{**r, "options": ran_options(r)} for r in result["methods"]]}
    s = result["settings"]
    ck = result["checkpoint"]
    lines = [
        "# Class-conditional refinement: " + result["settings"]["data"].split(":")[0],
        "",
        f"{result['machine']}; {result['date']}; seed {result['seed']}. Generated by `{result['command']}` "
        f"from `benchmarks/results/{result['benchmark']}.json`.",
        "",
        f"The pair {ck['path']} (sha256 {ck['sha256'][:12]}; cgan: conditional BatchNorm generator, projection "
        f"discriminator with spectral norm, hinge loss, {ck['epochs']} epochs on {ck['n_train']} training images); "
        f"ratios: the checkpoint's discriminator as trained, the same refitted and calibrated per class, and cDR-RS's "
        f"conditional feature-space ratio. {s['n_per_class']} samples per class ({s['n_per_class'] * s['num_classes']} in all), "
        f"classes='balanced'.",
        "",
        f"Feature space (not a ratio's): {result['feature_space']}; its accuracy on the {result['n_test']:,} test images: "
        f"{result['classifier_test_accuracy']:.4f}. Reference: those test images, per class.",
        "",
        "| method | ratio | intra-FD | vs raw | pooled FD | label accuracy | exact proportions | proposals / sample | ratio passes / sample | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["methods"]:
        name = f"{r['method']} {json.dumps(r['options']) if r['options'] else ''}"
        ratio = r.get("ratio") or ""
        if "refused" in r:
            lines.append(f"| {name} | {ratio} | refused: {r['refused']} | | | | | | | |")
            continue
        pps = r.get("proposals_per_sample")
        dps = r.get("d_evals_per_sample")
        change = "" if r["method"] == REAL else f"{100 * r['intra_fd_change_vs_raw']:+.1f}%"
        wall = "" if r.get("wall_s") is None else f"{r['wall_s']:.1f}"
        lines.append(
            f"| {name} | {ratio} | {r['intra_fd']:.2f} | {change} | "
            f"{r['fd_pooled']:.2f} | {r['label_accuracy']:.4f} | {'yes' if r['exact_proportions'] else 'NO'} | "
            f"{'' if pps is None else f'{pps:.2f}'} | {'' if dps is None else f'{dps:.2f}'} | {wall} |"
        )
    if result.get("ratios"):
        lines += [
            "",
            "The fitted conditional ratios (one model for all classes each):",
            "",
            "| ratio | what | fitting time (s) | storage |",
            "|---|---|---|---|",
        ]
        for name, info in result["ratios"].items():
            lines.append(
                f"| {name} | {info['kind']} | {info['fit_time_s']:.0f} | {info['file_bytes'] / 2**20:.2f} MiB (ratio file) |"
            )
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
        if r["method"] == "rs" and r.get("log_M_per_class") and r["options"].get("m_quantile", 1.0) >= 1.0:
            lines += [
                "",
                f"Bound per class of exact rs with {r['ratio']} (log M_y, the burn-in maximum raised online): "
                + ", ".join(f"{c}: {v:.2f}" for c, v in r["log_M_per_class"].items()),
            ]
    t = result["timings_s"]
    lines += ["", "Time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
