"""What refitting a discriminator costs on a 64-px image GAN, with and without early stopping.

    python benchmarks/refit_cost.py [--mnist ../shared/data/mnist]

A 64-px DCGAN on MNIST (the images resized from 28 px; 3 epochs on 10,000 images, ``refine
train``) stands for a pair trained elsewhere at that size. Its discriminator is then refitted
against the fixed generator by ``refine fit-ratio`` on 20,000 real images, three times:

- ``--lr 2e-4 --epochs 10 --patience 0``: every epoch, as DRS's protocol with a fixed budget;
- ``--lr 2e-4 --epochs 10 --patience 2 --min-delta 1e-3 --n-val 2000``: stop when the held-out
  loss on 2,000 other real images (and as many generated) has not fallen by more than 0.001 nats
  for 2 epochs, and keep the epoch with the lowest loss;
- the command's defaults: lr 1e-4, patience 3 on 5,000 held-out images, min-delta 0.001, at most
  100 epochs.

Each then fits a logistic calibration on 2,000 further images. Reported: epochs run, the best
epoch, the held-out loss per epoch, seconds per epoch and in all (the command's own record), the
calibration's held-out log loss.

Then what each ratio does: ``refine eval`` of the raw generator, ``drs`` and ``sir`` with the
discriminator as saved at the end of training and with each refitted one, in the feature space of
a separately trained 64-px classifier (``refine train-classifier --image-size 64``): the
Fréchet distance and the class-histogram KL of 1,000 samples (seed 0).

Results: ``benchmarks/results/refit_cost.json`` and ``.md``. Intermediate files go to
``benchmarks/_work/refit_cost`` (the GAN, the ratio files and the classifier are reused when
present; a reused fit reports the time its record holds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

WORK = REPO / "benchmarks" / "_work" / "refit_cost"
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_MNIST = os.path.relpath(Path(os.environ.get("REFINE_SHARED", REPO.parent / "shared")) / "data" / "mnist", REPO)
RUNS = {
    "fixed 10 epochs": ["--lr", "2e-4", "--epochs", "10", "--patience", "0"],
    "early stopping (patience 2, min-delta 1e-3, cap 10)": [
        "--lr",
        "2e-4",
        "--epochs",
        "10",
        "--patience",
        "2",
        "--min-delta",
        "1e-3",
        "--n-val",
        "2000",
    ],
    "command defaults (lr 1e-4, patience 3 on 5,000 held out, cap 100)": [],
}


def main() -> None:
    import torch
    from common import machine, refine_cli, today, write_results

    from refine.io import safe_load

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", default=DEFAULT_MNIST, help="folder with the four MNIST files")
    args = p.parse_args()
    os.chdir(REPO)
    WORK.mkdir(parents=True, exist_ok=True)
    data = f"mnist:{args.mnist}"
    ckpt = WORK.relative_to(REPO) / "dcgan64.pt"
    train = [
        "train", "--data", data, "--image-size", "64", "--n-train", "10000", "--epochs", "3", "--batch-size", "64",
        "--latent-dim", "100", "--width", "32", "--d-width", "32", "--d-norm", "spectral", "--seed", "0",
        "--device", "cpu", "--out", str(ckpt), "--no-progress",
    ]  # fmt: skip
    t0 = time.perf_counter()
    train_s = None
    if not ckpt.is_file():
        refine_cli(train)
        train_s = time.perf_counter() - t0
    rows = []
    for name, extra in RUNS.items():
        out = WORK / f"ratio_{len(rows)}.pt"
        cmd = [
            "fit-ratio", "--ckpt", str(ckpt), "--kind", "discriminator", "--data", data, "--n-train", "20000",
            "--batch-size", "64", "--calibration", "logistic", "--n-calib", "2000", *extra,
            "--seed", "0", "--device", "cpu", "--out", str(out.relative_to(REPO)), "--no-progress",
        ]  # fmt: skip
        t1 = time.perf_counter()
        wall = None
        if not out.is_file():
            refine_cli(cmd)
            wall = time.perf_counter() - t1
        meta = safe_load(out, what="ratio file")["meta"]
        hist = meta["history"]
        rows.append(
            {
                "run": name,
                "command": "refine " + " ".join(cmd),
                "epochs_run": meta["epochs_run"],
                "best_epoch": meta.get("best_epoch"),
                "fit_time_s": meta["fit_time_s"],
                "s_per_epoch": meta["fit_time_s"] / max(meta["epochs_run"], 1),
                "command_wall_s": wall,
                "val_loss": [h.get("val_loss") for h in hist],
                "train_loss": [h["loss_d"] for h in hist],
                "train_acc": [h["acc"] for h in hist],
                "calibration_log_loss": meta["calibration"]["after"]["log_loss"],
                "calibration_slope": safe_load(out, what="ratio file")["calibration"]["a"],
                "ratio_file": str(out.relative_to(REPO)),
            }
        )
        print(rows[-1], flush=True)
    quality = _quality(data, ckpt, [("as saved", None)] + [(r["run"], r["ratio_file"]) for r in rows])
    result = {
        "benchmark": "refit_cost",
        "machine": machine(),
        "torch": torch.__version__,
        "date": today(),
        "command": f"python benchmarks/refit_cost.py {' '.join(sys.argv[1:])}".strip(),
        "gan": {"command": "refine " + " ".join(train), "train_s": train_s},
        "rows": rows,
        "quality": quality,
    }
    write_results("refit_cost", result, render(result))


def _quality(data: str, ckpt: Path, ratios: list[tuple[str, str | None]]) -> list[dict]:
    """``refine eval`` rows (none, drs, sir) with each ratio, in a 64-px classifier's feature space."""
    from common import eval_quality, refine_cli

    clf = WORK.relative_to(REPO) / "clf64.pt"  # paths relative to the repository, the working directory
    if not clf.is_file():
        refine_cli(
            ["train-classifier", "--data", data, "--image-size", "64", "--n-train", "10000", "--epochs", "1",
             "--widths", "8,16,32,64", "--feature-dim", "64", "--seed", "1", "--device", "cpu", "--out", str(clf)]
        )  # fmt: skip
    out = []
    for name, ratio in ratios:
        ev = WORK.relative_to(REPO) / f"eval_{len(out)}"
        cmd = ["eval", "--ckpt", str(ckpt), "--data", data, "--features", str(clf), "--methods", "none,drs,sir",
               "-o", "sir.candidates=20", "-n", "1000", "--metrics", "fid,classes", "--seed", "0", "--device", "cpu",
               "--out", str(ev), "--no-progress"]  # fmt: skip
        if ratio is not None:
            cmd[3:3] = ["--ratio", ratio]
        out.append(eval_quality(name, cmd, ev))
    return out


def render(result: dict) -> str:
    """The Markdown report, generated from the JSON results."""
    lines = [
        "# The cost of refitting a discriminator (64-px MNIST DCGAN)",
        "",
        f"{result['machine']}; {result['date']}. Generated by `{result['command']}` from `benchmarks/results/refit_cost.json`.",
        "",
        "| run | epochs run | best epoch | s / epoch | fitting (s) | held-out loss per epoch | training accuracy per epoch | calibrated held-out log loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        vl = ", ".join("–" if v is None else f"{v:.2g}" for v in r["val_loss"])
        lines.append(
            f"| {r['run']} | {r['epochs_run']} | {r['best_epoch'] or '–'} | {r['s_per_epoch']:.0f} | {r['fit_time_s']:.0f} | "
            f"{vl} | {', '.join(f'{a:.3f}' for a in r['train_acc'])} | {r['calibration_log_loss']:.2g} |"
        )
    if result.get("quality"):
        from common import quality_table

        lines += [
            "",
            f"What each ratio does (refine eval, 1,000 samples, seed 0; features: {result['quality'][0]['features']}):",
            "",
            *quality_table(result["quality"]),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
