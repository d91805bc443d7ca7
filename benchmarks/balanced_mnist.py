"""Balanced refinement on MNIST: the shipped DCGAN raw, with DRE-F-SP + rs, and the same balanced to the data's class frequencies.

    python benchmarks/balanced_mnist.py [--mnist ../shared/data/mnist] [--n 1000] [--seeds 0,1,2]

DRE-F-SP raises the FID gain on MNIST while over-sampling some digits. ``refine.sample(...,
balance=classifier, class_probs=p)`` keeps the refined class histogram at ``p`` by stratified
acceptance on predicted classes (:mod:`refine.balanced`). Rows, each at ``--n`` samples and
every seed of ``--seeds``:

1. the raw generator (``none``); its seed spread is the noise of the measures at this ``n``;
2. DRE-F-SP with ``rs`` at ``m_quantile`` 0.99 (the shipped ratio ``mnist-dre-f-sp``);
3. the same, balanced to the MNIST training split's label frequencies;
4. the raw generator balanced the same way (what balancing alone does).

The balancing classifier is the digit classifier inside the DRE-F-SP ratio file (its frozen
ResNet-34 feature network with its 10-way head, trained on MNIST labels). Everything is scored
by a different network: benchmarks/mnist.py's small evaluation CNN (cached at
benchmarks/_work/mnist/eval_cnn.pt): FID in its 128-d feature space against the 10,000 test
images, and the KL divergence ``KL(h || p_data)`` of the histogram ``h`` of its predicted
classes to the training label frequencies. ``n`` real training images give the floor of both.

Results: ``benchmarks/results/balanced_mnist.json`` and ``.md`` (generated from the JSON).
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

RESULTS = REPO / "benchmarks" / "results"
DEFAULT_MNIST = os.path.relpath(Path(os.environ.get("REFINE_SHARED", REPO.parent / "shared")) / "data" / "mnist", REPO)
ROWS = (
    # (label, ratio?, method, options, balanced?)
    ("raw generator", False, "none", {}, False),
    ("raw generator, balanced", False, "none", {}, True),
    ("DRE-F-SP: rs (M = 99th pct)", True, "rs", {"m_quantile": 0.99}, False),
    ("DRE-F-SP: rs (M = 99th pct), balanced", True, "rs", {"m_quantile": 0.99}, True),
)


def kl(h, p) -> float:
    import torch

    h = torch.as_tensor(h, dtype=torch.float64)
    p = torch.as_tensor(p, dtype=torch.float64)
    return float((h * (h.clamp_min(1e-12) / p).log()).sum())


def run(args) -> dict:
    import mnist as mnist_bench
    import torch
    from common import machine, today

    import refine
    from refine.data.images import load_images
    from refine.io import file_sha256, load_gan, load_ratio
    from refine.io.pretrained import pretrained_path
    from refine.metrics.features import extract_features
    from refine.metrics.fid import feature_statistics, frechet_distance

    torch.set_num_threads(args.threads)
    log = lambda m: print(m, flush=True)  # noqa: E731
    t_start = time.perf_counter()
    gan_path, dre_path = pretrained_path("mnist-dcgan"), pretrained_path("mnist-dre-f-sp")
    gan = load_gan(gan_path)
    dre = load_ratio(dre_path)
    cnn, test, acc = mnist_bench.get_evaluator(args.mnist, log)
    cnn_f = mnist_bench._Features(cnn)
    train = load_images(f"mnist:{args.mnist}", split="train")
    p_data = (torch.bincount(train.labels, minlength=10).double() / len(train)).tolist()
    balancer = dre.feature_net.eval()
    with torch.no_grad():
        bal_acc = float(
            sum(
                (balancer(test.float(slice(i, i + 1000))).argmax(1) == test.labels[i : i + 1000]).sum()
                for i in range(0, len(test), 1000)
            )
            / len(test)
        )
    log(f"evaluation CNN test accuracy {acc:.4f}; balancing classifier (DRE-F-SP feature network) {bal_acc:.4f}")
    stats = feature_statistics(extract_features(cnn_f, test.float(), batch_size=500, progress=False))

    def score(x) -> dict:
        fid = frechet_distance(*stats, *feature_statistics(extract_features(cnn_f, x, batch_size=500, progress=False)))
        with torch.no_grad():
            pred = torch.cat([cnn(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
        hist = (torch.bincount(pred, minlength=10).double() / len(x)).tolist()
        return {"fid_cnn": fid, "class_kl": kl(hist, p_data), "class_hist": [round(h, 4) for h in hist]}

    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for s in seeds:
        real = load_images(
            f"mnist:{args.mnist}", split="train", limit=args.n, rng=torch.Generator().manual_seed(99 + s)
        ).float()
        rows.append({"method": "real training images (floor)", "seed": s, **score(real)})
        log(json.dumps(rows[-1]))
    for label, use_ratio, method, opts, balanced in ROWS:
        target = refine.wrap(gan.generator, ratio=dre if use_ratio else None, check=False)
        for s in seeds:
            kw = {"balance": balancer, "class_probs": p_data} if balanced else {}
            t0 = time.perf_counter()
            res = refine.sample(target, method, args.n, rng=torch.Generator().manual_seed(s), **kw, **opts)
            wall = time.perf_counter() - t0
            info = res.info
            row = {
                "method": label,
                "sampler": method,
                "options": opts,
                "balanced": balanced,
                "seed": s,
                **score(res.x),
                "proposals_per_sample": info.get("proposals_per_sample"),
                "g_evals_per_sample": info.get("g_evals_per_sample"),
                "d_evals_per_sample": info.get("d_evals_per_sample"),
                "wall_s": wall,
            }
            if balanced:
                b = info["balanced"]
                with torch.no_grad():
                    agree = float((cnn(res.x).argmax(1) == res.y).double().mean())
                row["balance"] = {**b, "agreement_with_eval_cnn": agree}
            rows.append(row)
            log(json.dumps({k: v for k, v in row.items() if k != "balance"}))
    return {
        "command": "python benchmarks/balanced_mnist.py " + " ".join(sys.argv[1:]),
        "machine": machine() + f" on {args.threads} thread",
        "date": today(),
        "n": args.n,
        "seeds": seeds,
        "inputs": {
            "gan": {"path": str(gan_path.relative_to(REPO)), "sha256": file_sha256(gan_path)},
            "dre_f_sp": {"path": str(dre_path.relative_to(REPO)), "sha256": file_sha256(dre_path)},
        },
        "eval_cnn_test_accuracy": acc,
        "balancing_classifier": "the DRE-F-SP ratio's feature network (ResNet-34 quarter width, 10-way head)",
        "balancing_classifier_test_accuracy": bal_acc,
        "data_class_probs": [round(p, 5) for p in p_data],
        "rows": rows,
        "total_s": time.perf_counter() - t_start,
    }


def summary(result: dict) -> list[dict]:
    """Per method: mean and std over seeds of FID and class KL, and the mean costs."""
    from common import mean_std

    out = []
    for label in dict.fromkeys(r["method"] for r in result["rows"]):
        rs = [r for r in result["rows"] if r["method"] == label]
        fid, fid_sd = mean_std([r["fid_cnn"] for r in rs])
        k, k_sd = mean_std([r["class_kl"] for r in rs])
        row = {"method": label, "fid": fid, "fid_sd": fid_sd, "kl": k, "kl_sd": k_sd, "runs": len(rs)}
        for key in ("proposals_per_sample", "d_evals_per_sample", "wall_s"):
            vals = [r.get(key) for r in rs if r.get(key) is not None]
            row[key] = sum(vals) / len(vals) if vals else None
        if any("balance" in r for r in rs):
            row["stratification"] = sum(r["balance"]["acceptance_overall"] for r in rs) / len(rs)
            row["agreement"] = sum(r["balance"]["agreement_with_eval_cnn"] for r in rs) / len(rs)
        out.append(row)
    return out


def render(result: dict) -> str:
    """The Markdown report, generated from the JSON results."""
    lines = [
        "# Balanced refinement on MNIST",
        "",
        f"{result['machine']}; {result['date']}; n = {result['n']}, seeds {', '.join(map(str, result['seeds']))}. "
        f"Generated by `{result['command']}` from `benchmarks/results/balanced_mnist.json`.",
        "",
        f"Balancing classifier: {result['balancing_classifier']}, test accuracy {result['balancing_classifier_test_accuracy']:.4f}. "
        f"Scored by benchmarks/mnist.py's evaluation CNN (test accuracy {result['eval_cnn_test_accuracy']:.4f}), not the "
        "balancing classifier: FID in its feature space against the 10,000 test images, and KL(h || p_data) of its "
        "predicted-class histogram to the training label frequencies.",
        "",
        "| method | FID (eval CNN) | class-histogram KL | proposals / sample | ratio passes / sample | kept by the stratification | eval CNN agrees with the balancing class | wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def f(v, fmt):
        return "" if v is None else fmt.format(v)

    for r in summary(result):
        lines.append(
            f"| {r['method']} | {r['fid']:.2f} ± {r['fid_sd']:.2f} | {r['kl']:.4f} ± {r['kl_sd']:.4f} | "
            f"{f(r['proposals_per_sample'], '{:.2f}')} | {f(r['d_evals_per_sample'], '{:.2f}')} | "
            f"{f(r.get('stratification'), '{:.3f}')} | {f(r.get('agreement'), '{:.3f}')} | {f(r['wall_s'], '{:.1f}')} |"
        )
    lines += [
        "",
        "Class histograms (eval CNN), per run:",
        "",
        "| method | seed | histogram (digits 0-9) |",
        "|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['seed']} | {' '.join(f'{h:.3f}' for h in r['class_hist'])} |")
    lines.append(f"| training label frequencies | | {' '.join(f'{h:.3f}' for h in result['data_class_probs'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", default=DEFAULT_MNIST)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--render", action="store_true", help="rewrite the markdown from the JSON only")
    args = ap.parse_args()
    from refine.io import write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.render:
        result = json.loads((RESULTS / "balanced_mnist.json").read_text())
    else:
        result = run(args)
        write_json(result, RESULTS / "balanced_mnist.json")
    (RESULTS / "balanced_mnist.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
