"""A foreign 64-px MNIST DCGAN: what its own discriminator, refitted or not, does as a ratio.

    python benchmarks/foreign_dcgan.py [--mnist ../shared/data/mnist] [-n 1000]

The pair: ``benchmarks/foreign_dcgan_train.py`` trains the PyTorch examples' DCGAN layout
(``benchmarks/foreign_dcgan_nets.py``, width 32; the discriminator ends in a sigmoid) in plain
PyTorch on the 60,000 MNIST training images resized to 64 px. refine sees only the two state
dicts and the factories, as a user with a pair from elsewhere would (``--arch``, ``--disc-arch``,
``--disc-output prob``).

Ratios, each through the command line:

- ``as saved``: the discriminator at the end of training;
- ``fine-tuned, FIT``: ``refine fit-ratio --disc D.pt ...`` continues training a copy against the
  fixed generator with the logistic loss on 20,000 real images, then fits a logistic calibration
  on 2,000 further ones; FIT is each protocol in ``PROTOCOLS`` (the command's defaults, and early
  stopping on 2,000 held-out real images at two learning rates);
- ``DRE-F-SP``: ``refine fit-ratio --kind feature-sp`` at a CPU size (``DRE_F_SP``), for comparison:
  a ratio fitted in a label-trained feature space rather than on pixels.

Each is scored by ``refine eval`` with drs and sir (20 candidates) on ``-n`` samples (seed 0), in
the feature space of the 28-px MNIST classifier of ``benchmarks/eval_mnist.py`` (samples resized
to 28 px): Fréchet distance to the 10,000 test images and the class-histogram KL (diversity).
Reported beside them: the epochs run, training accuracy, held-out loss and the calibration slope.

rs's bound on an image pair: with the ratio of the command's defaults, ``refine eval --methods
none,rs`` once per bound in ``RS_BOUNDS`` (exact; the default, exact until exact rs would be
refused, then capped; the 99th percentile), scored the same way, with the cap it chose and what
it trades (``capped_mass``).

Results: ``benchmarks/results/foreign_dcgan.{json,md}``. Intermediate files go to
``benchmarks/_work/foreign_dcgan`` (the pair, the classifier and the ratio files are reused).
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

WORK = REPO / "benchmarks" / "_work" / "foreign_dcgan"
RESULTS = REPO / "benchmarks" / "results"
CLASSIFIER = REPO / "benchmarks" / "_work" / "eval_mnist" / "mnist_clf.pt"
DEFAULT_MNIST = os.path.relpath(Path(os.environ.get("REFINE_SHARED", REPO.parent / "shared")) / "data" / "mnist", REPO)
NETS = "benchmarks/foreign_dcgan_nets.py"
#: label -> extra fit-ratio flags (the data size, calibration and seed are common to all)
PROTOCOLS = {
    "10 epochs, lr 1e-3 (the former defaults)": ["--epochs", "10", "--patience", "0", "--lr", "1e-3"],
    "early stopping, lr 1e-3": ["--epochs", "10", "--patience", "2", "--n-val", "2000", "--lr", "1e-3"],
    "early stopping, lr 1e-4": ["--epochs", "10", "--patience", "2", "--n-val", "2000", "--lr", "1e-4"],
    "command defaults (lr 1e-4, patience 3 on 5,000 held out, cap 100)": [],
}


#: DRE-F-SP at a CPU size: a quarter-width ResNet-34 (stride-2 stem) trained on the labels, then the head
DRE_F_SP = ["--n-train", "20000", "--n-val", "2000", "--feature-widths", "16,32,64,128", "--stem-stride", "2",
            "--feature-dim", "128", "--feature-epochs", "2", "--head-hidden", "256,128", "--lambdas", "0,0.1,1",
            "--epochs", "40", "--batch-size", "256", "--lr", "1e-3"]  # fmt: skip


#: rs's bounds compared on the command-defaults ratio: (label, -o flags for rs)
RS_BOUNDS = (
    ("exact (m_quantile 1)", ["-o", "rs.m_quantile=1"]),
    ("default bound", []),
    ("m_quantile 0.99", ["-o", "rs.m_quantile=0.99"]),
)


def _dre_record(path: Path) -> dict:
    """What the DRE-F-SP ratio file says of its fit: times, the feature network's accuracy, the chosen
    lambda and E_G[r] on validation data (about 1 for a normalised ratio)."""
    from refine.io import safe_load

    meta = safe_load(path, what="ratio file")["meta"]
    head, net = meta["head"], meta["feature_net"]
    return {
        "feature_time_s": net.get("train_time_s"),
        "feature_val_acc": net.get("val_acc"),
        "head_time_s": head.get("train_time_s"),
        "lambda": head.get("lambda"),
        "val_mean_r_fake": head.get("val_mean_r_fake"),
    }


def _check_fit(meta: dict, extra: list[str], path: Path) -> None:
    """A fit reused from ``path`` must have run with the protocol's flags (the file is named by its index)."""
    given = dict(zip(extra[::2], extra[1::2]))
    for flag, key in (("--lr", "lr"), ("--epochs", "epochs"), ("--patience", "patience"), ("--n-val", "n_val")):
        if flag in given and float(given[flag]) != float(meta[key]):
            raise SystemExit(f"{path} was fitted with {key} {meta[key]}, not {given[flag]}: remove it to refit")


def generator_flags(work: Path) -> list[str]:
    return ["--ckpt", str(work / "G.pt"), "--arch", f"{NETS}:generator", "--latent-shape", "100,1,1",
            "--output-range", "[-1,1]"]  # fmt: skip


def main() -> None:
    from common import eval_quality, machine, refine_cli, run_python, today, write_results

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", default=DEFAULT_MNIST, help="folder with the four MNIST files")
    p.add_argument("-n", type=int, default=1000)
    args = p.parse_args()
    os.chdir(REPO)
    work = WORK.relative_to(REPO)
    data = f"mnist:{args.mnist}"
    if not (WORK / "G.pt").is_file():
        run_python([str(REPO / "benchmarks" / "foreign_dcgan_train.py"), "--mnist", args.mnist, "--out", str(work)])
    training = json.loads((WORK / "train.json").read_text())
    if not CLASSIFIER.is_file():
        refine_cli(["train-classifier", "--data", data, "--out", str(CLASSIFIER.relative_to(REPO)), "--n-train", "20000",
                    "--epochs", "2", "--seed", "0", "--device", "cpu"])  # fmt: skip
    gen = generator_flags(work)
    disc = ["--disc-arch", f"{NETS}:discriminator", "--disc-output", "prob"]
    fits = []
    for i, (label, extra) in enumerate(PROTOCOLS.items()):
        out = work / f"d_tuned_{i}.safetensors"
        cmd = ["fit-ratio", *gen, "--data", data, "--disc", str(work / "D.pt"), *disc, "--n-train", "20000",
               "--batch-size", "64", "--calibration", "logistic", "--n-calib", "2000", *extra, "--seed", "0",
               "--device", "cpu", "--out", str(out), "--no-progress"]  # fmt: skip
        t0 = time.perf_counter()
        if not out.is_file():
            refine_cli(cmd)
        meta = json.loads(Path(str(out) + ".json").read_text())
        _check_fit(meta, extra, out)
        hist = meta["history"]
        fits.append(
            {
                "protocol": label,
                "command": "refine " + " ".join(cmd),
                "epochs_run": meta.get("epochs_run", len(hist)),
                "best_epoch": meta.get("best_epoch"),
                "fit_time_s": meta.get("fit_time_s", time.perf_counter() - t0),
                "train_acc": [h.get("acc") for h in hist],
                "val_loss": [h.get("val_loss") for h in hist],
                "calibration": meta.get("calibration"),
                "use_with": meta["use_with"].split(),
            }
        )
        flags = fits[-1]["use_with"]  # log r = a * logit + b is used as logit / T with T = 1 / a
        fits[-1]["calibration_slope"] = 1.0 / float(flags[flags.index("--disc-temperature") + 1])
        print(fits[-1]["protocol"], fits[-1]["epochs_run"], fits[-1]["train_acc"], flush=True)
    dre_file = work / "dre_f_sp.safetensors"
    dre_cmd = ["fit-ratio", *gen, "--kind", "feature-sp", "--data", data, *DRE_F_SP, "--seed", "0", "--device", "cpu",
               "--out", str(dre_file), "--no-progress"]  # fmt: skip
    if not dre_file.is_file():
        refine_cli(dre_cmd)
    dre = {"command": "refine " + " ".join(dre_cmd), **_dre_record(REPO / dre_file)}
    ratios = (
        [("as saved", ["--disc", str(work / "D.pt"), *disc])]
        + [(f"fine-tuned, {f['protocol']}", f["use_with"]) for f in fits]
        + [("DRE-F-SP (refine fit-ratio --kind feature-sp)", ["--ratio", str(dre_file)])]
    )
    quality = []
    for i, (label, flags) in enumerate(ratios):
        ev = work / f"eval_{i}"
        cmd = ["eval", *gen, *flags, "--data", data, "--features", str(CLASSIFIER.relative_to(REPO)),
               "--methods", "none,drs,sir", "-o", "sir.candidates=20", "-n", str(args.n), "--metrics", "fid,classes",
               "--seed", "0", "--device", "cpu", "--out", str(ev), "--no-progress"]  # fmt: skip
        quality.append(eval_quality(label, cmd, ev))
    defaults = next(f for f in fits if f["protocol"].startswith("command defaults"))
    rs_bounds = []
    for i, (label, opts) in enumerate(RS_BOUNDS):
        ev = work / f"eval_rs_{i}"
        cmd = ["eval", *gen, *defaults["use_with"], "--data", data, "--features", str(CLASSIFIER.relative_to(REPO)),
               "--methods", "none,rs", *opts, "-n", str(args.n), "--metrics", "fid,classes",
               "--seed", "0", "--device", "cpu", "--out", str(ev), "--no-progress"]  # fmt: skip
        rs_bounds.append({"bound": label, **eval_quality(f"fine-tuned, {defaults['protocol']}", cmd, ev)})
    import torch

    result = {
        "benchmark": "foreign_dcgan",
        "machine": machine(),
        "torch": torch.__version__,
        "date": today(),
        "command": f"python benchmarks/foreign_dcgan.py {' '.join(sys.argv[1:])}".strip(),
        "n": args.n,
        "training": training,
        "fits": fits,
        "dre_f_sp": dre,
        "quality": quality,
        "rs_bounds": rs_bounds,
    }
    write_results("foreign_dcgan", result, render(result))


def render(result: dict) -> str:
    """The Markdown report, generated from the JSON results."""
    from common import quality_table

    tr = result["training"]
    lines = [
        "# A foreign 64-px MNIST DCGAN: its discriminator as a ratio",
        "",
        f"{result['machine']}; {result['date']}. Generated by `{result['command']}` from `benchmarks/results/foreign_dcgan.json`.",
        f"The pair: trained without refine by `benchmarks/foreign_dcgan_train.py` ({tr['epochs']} epochs, batch "
        f"{tr['batch']}, real label {tr['real_label']}, {tr['train_s'] / 60:.0f} min). n = {result['n']} samples per "
        "row, seed 0; features: "
        f"{result['quality'][0]['features']}.",
        "",
        *quality_table(result["quality"], acceptance=True),
    ]
    lines += [
        "",
        "| fitting protocol | epochs run | best epoch | fitting (s) | training accuracy per epoch | held-out loss per epoch | calibration slope a | calibrated held-out log loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in result["fits"]:
        a = f["calibration_slope"]
        after = ((f.get("calibration") or {}).get("after") or {}).get("log_loss")
        vl = ", ".join("–" if v is None else f"{v:.2g}" for v in f["val_loss"])
        lines.append(
            f"| {f['protocol']} | {f['epochs_run']} | {f['best_epoch'] or '–'} | {f['fit_time_s']:.0f} | "
            f"{', '.join('–' if a_ is None else f'{a_:.3f}' for a_ in f['train_acc'])} | {vl} | "
            f"{a:.3g} | {'–' if after is None else f'{after:.3g}'} |"
        )
    if result.get("rs_bounds"):
        lines += ["", *rs_bounds_table(result["rs_bounds"])]
    return "\n".join(lines) + "\n"


def rs_bounds_table(runs: list[dict]) -> list[str]:
    """rs at each bound: FD against the raw generator of the same run, class KL, cost, and the cap or the refusal."""
    lines = [
        "| rs bound | FD | vs raw | class KL | G evals / sample | capped at (capped mass) |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        raw, rs = run["rows"][0], run["rows"][1]
        if rs.get("error"):
            lines.append(f"| {run['bound']} | refused: {rs['error'].split(';')[0]} | | | | |")
            continue
        q = rs.get("bound_quantile")
        cap = f"{q:g} ({rs['capped_mass']:.2f})" if q is not None else "–"
        lines.append(
            f"| {run['bound']} | {rs['fd']:.2f} | {100 * (rs['fd'] / raw['fd'] - 1):+.1f} % | {rs['class_kl']:.4f} | "
            f"{rs['g_evals_per_sample']:.1f} | {cap} |"
        )
    return lines


if __name__ == "__main__":
    main()
