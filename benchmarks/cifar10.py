"""CIFAR-10 (JPEG) benchmark, small: raw DCGAN vs refinement with discriminator ratios vs with DRE-F-SP.

    python benchmarks/cifar10.py train [--data ../shared/data/cifar10/cifar10_jpg_q75_YoongiKim.zip]
    python benchmarks/cifar10.py eval  [--data ...] [--n 2000]

A small version of Ding et al.'s (2020) CIFAR-10 comparison sized for a 2-core CPU shared with
other work, everything on one torch thread. The data are the JPEG (quality 75) CIFAR-10 archive,
not the lossless dataset, so the FIDs are not comparable with published CIFAR-10 numbers; only
the differences between rows are meant to be read.

``train`` runs the four commands of ``recipe()`` (each one thread) and keeps every file under
``benchmarks/_work/cifar10/`` (ignored by git; nothing is shipped): a DCGAN of width 32 (G and D)
trained for a few epochs on the 50,000 training images, its discriminator refitted against the
fixed generator with a logistic calibration (DRS / MH-GAN), DRE-F-SP with a ResNet-34 feature
network at a quarter of the standard width (stride-2 stem), and the evaluation classifier.

``eval`` scores ``--n`` samples per method by FID in the 128-d feature space of that evaluation
classifier: a separately trained ResNet-34 classifier (``refine train-classifier``, another
seed) against the 10,000 test images. It is a different network from
the DRE-F-SP feature network (same family, trained apart), so the score is not measured in the
space the ratio was fitted in; the FID in the DRE-F-SP network's own space is reported too, for
reference. The discriminator rows are run twice: with the refitted, calibrated discriminator
(DRS / MH-GAN's recipe) and with the GAN's discriminator as it ended training. Every method gets the same seed (paired comparisons); the raw generator is also scored
with ``--raw-seeds`` other seeds, the spread that tells noise from effect. Cost per method: wall
time, generator and ratio evaluations per output sample, acceptance rate.

Results: ``benchmarks/results/cifar10.json``, ``cifar10.md`` and ``cifar10.png`` (64 samples per method).
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

from common import refine_cli, without_training_state  # noqa: E402

WORK = Path(
    os.environ.get("REFINE_CIFAR10_WORK", REPO / "benchmarks" / "_work" / "cifar10")
).resolve()  # the env var: for trying the script on other files
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_DATA = os.path.relpath(
    Path(os.environ.get("REFINE_SHARED", REPO.parent / "shared"))
    / "data"
    / "cifar10"
    / "cifar10_jpg_q75_YoongiKim.zip",
    REPO,
)
SEED = 0
EPOCHS = 15

GAN_TRAIN, GAN, D_RATIO, DRE, CLF = (
    "cifar10_dcgan_train.pt",
    "cifar10_dcgan.pt",
    "cifar10_d_ratio.pt",
    "cifar10_dre_f_sp.pt",
    "eval_clf.pt",
)


def _w(name: str) -> str:
    return str((WORK / name).relative_to(REPO))


def recipe(data_path: str) -> dict[str, list[str]]:
    """The commands, relative to the repository root: ``refine ...`` for each of them."""
    data = f"cifar10-jpg:{data_path}"
    return {
        "gan": [
            "train",
            "--data",
            data,
            "--n-train",
            "50000",
            "--epochs",
            str(EPOCHS),
            "--batch-size",
            "64",
            "--latent-dim",
            "100",
            "--width",
            "32",
            "--d-width",
            "32",
            "--d-norm",
            "spectral",
            "--seed",
            str(SEED),
            "--device",
            "cpu",
            "--out",
            _w(GAN_TRAIN),
            "--no-progress",
        ],
        "d_ratio": [
            "fit-ratio",
            "--ckpt",
            _w(GAN),
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
            _w(D_RATIO),
            "--no-progress",
        ],
        "dre": [
            "fit-ratio",
            "--ckpt",
            _w(GAN),
            "--kind",
            "feature-sp",
            "--data",
            data,
            "--n-train",
            "50000",
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
            "40",
            "--batch-size",
            "256",
            "--lr",
            "1e-3",
            "--seed",
            str(SEED),
            "--device",
            "cpu",
            "--out",
            _w(DRE),
            "--no-progress",
        ],
        "clf": [
            "train-classifier",
            "--data",
            data,
            "--out",
            _w(CLF),
            "--epochs",
            "3",
            "--widths",
            "16,32,64,128",
            "--feature-dim",
            "128",
            "--stem-stride",
            "2",
            "--seed",
            "1",
            "--device",
            "cpu",
        ],
    }


# --------------------------------------------------------------------------- train
def train(args) -> None:
    from refine.io import write_json

    WORK.mkdir(parents=True, exist_ok=True)
    steps = recipe(args.data)
    times = {}
    skip = set(filter(None, args.skip.split(",")))
    for name in ("gan", "d_ratio", "dre", "clf"):
        if name not in skip:
            t0 = time.perf_counter()
            refine_cli(steps[name])
            times[name] = time.perf_counter() - t0
        if name == "gan":  # the model without its optimizer state (the _train file keeps it for --resume)
            without_training_state(WORK / GAN_TRAIN, WORK / GAN)
        if name not in times:
            continue
        print(f"{name}: {times[name]:.0f}s", flush=True)
    rec_path = WORK / "train_record.json"
    record = json.loads(rec_path.read_text()) if rec_path.is_file() else {}
    record.update({"commands": {k: "refine " + " ".join(v) for k, v in steps.items()}})
    record.setdefault("seconds", {}).update(times)
    write_json(record, rec_path)


# --------------------------------------------------------------------------- eval
METHODS = [
    # (label, ratio, sampler, options); the same settings as benchmarks/mnist.py. Rejection with DRE-F-SP takes M at the 99th
    # percentile of the burn-in weights (r capped there), which keeps its cost near that of the other samplers; exact rejection
    # (M = max, raised online) is not run, to keep the whole pipeline within the time this run had on one thread.
    ("raw generator", None, "none", {}),
    ("D: drs (DRS, gamma 80)", "d", "drs", {}),
    ("D: mh (MH-GAN, k 50)", "d", "mh", {"k": 50}),
    ("D: sir (20 candidates)", "d", "sir", {"candidates": 20}),
    # The GAN's own discriminator as it ended training (no refit, no calibration): tells whether the refit is what moves FID.
    ("D as trained: drs (gamma 80)", "d0", "drs", {}),
    ("D as trained: mh (k 50)", "d0", "mh", {"k": 50}),
    ("D as trained: sir (20 candidates)", "d0", "sir", {"candidates": 20}),
    ("DRE-F-SP: rs (M = 99th pct)", "dre", "rs", {"m_quantile": 0.99}),
    ("DRE-F-SP: drs (gamma 80)", "dre", "drs", {}),
    ("DRE-F-SP: mh (k 50)", "dre", "mh", {"k": 50}),
    ("DRE-F-SP: sir (20 candidates)", "dre", "sir", {"candidates": 20}),
]
RATIO_NAMES = {
    "d": "discriminator (refitted, logistic)",
    "d0": "discriminator as trained (no refit, no calibration)",
    "dre": "DRE-F-SP",
}


def evaluate(args) -> None:
    import numpy as np
    import torch
    from common import machine, today

    from refine.data.images import load_images
    from refine.eval import (
        compare_methods,
        load_classifier,
        load_feature_space,
        real_reference,
        save_image_panels,
        score_images,
        to_uint8,
    )
    from refine.io import atomic_write, file_sha256, load_gan, load_ratio, write_json
    from refine.target import LatentTarget

    torch.set_num_threads(args.threads)
    log = lambda m: print(m, flush=True)  # noqa: E731
    data = f"cifar10-jpg:{args.data}"
    files = {"gan": WORK / GAN, "d": WORK / D_RATIO, "dre": WORK / DRE, "clf": WORK / CLF}
    for f in files.values():
        if not f.is_file():
            sys.exit(f"error: {f.relative_to(REPO)} not found; run `python benchmarks/cifar10.py train` first")
    gan = load_gan(files["gan"])
    ratios = {"d": load_ratio(files["d"]), "d0": gan.ratio, "dre": load_ratio(files["dre"])}
    t0 = time.perf_counter()
    spaces = {"clf": load_feature_space(files["clf"]), "dre_space": load_feature_space(files["dre"])}
    shape = (3, 32, 32)
    refs = {k: real_reference(s, data, image_shape=shape, split="test", n_prdc=2000) for k, s in spaces.items()}
    _, clf_info = load_classifier(files["clf"])
    clf_meta = torch.load(files["clf"], weights_only=True).get("meta", {})
    log(
        f"real references in {time.perf_counter() - t0:.0f}s; evaluation classifier test accuracy {clf_meta.get('val_acc')}"
    )

    def score(x: torch.Tensor) -> dict:
        x8 = to_uint8(x, "[-1,1]")
        out = {}
        for k, s in spaces.items():
            r = score_images(s, x8, refs[k], k=3)
            if k == "clf":
                out.update({"fid": r[s.keys.fd], "precision": r["precision"], "recall": r["recall"]})
            else:
                out["fid_dre_space"] = r[s.keys.fd]  # refine's key is "fd" outside the Inception space
        out["_x8"] = x8[:64]
        return out

    rows = []
    real_n = load_images(data, split="train", limit=args.n, rng=torch.Generator().manual_seed(99)).images
    real_n = real_n[
        torch.randperm(len(real_n), generator=torch.Generator().manual_seed(99))
    ]  # the subset comes sorted by class
    s = score(real_n.float() / 127.5 - 1)
    grids = {"real training images": s.pop("_x8")}
    rows.append({"method": f"real training images (n={args.n}, reference floor)", "ratio": None, **s})
    log(json.dumps(rows[-1]))
    only = set(args.methods.split(",")) if args.methods else None
    for label, rname, method, opts in METHODS:
        if only and label not in only and method not in only:
            continue
        target = LatentTarget(gan.generator, ratios[rname] if rname else None)
        try:
            (row,) = compare_methods(
                target, [(method, opts)], args.n, seed=args.seed, score=score, progress=args.progress
            )
        except Exception as e:  # noqa: BLE001 - a sampler that fails (budget) is a result, not a crash
            rows.append(
                {"method": label, "ratio": RATIO_NAMES.get(rname), "sampler": method, "error": str(e).splitlines()[0]}
            )
            log(json.dumps(rows[-1]))
            continue
        row.pop("_x")
        grids[label] = row.pop("_x8")
        row = {
            "method": label,
            "ratio": RATIO_NAMES.get(rname),
            "sampler": method,
            **{k: v for k, v in row.items() if k != "method"},
        }
        rows.append(row)
        log(json.dumps(row))
    spread = None
    if args.raw_seeds > 0:
        seeds = [args.seed + k for k in range(1, args.raw_seeds + 1)]
        fids = []
        for sd in seeds:
            (row,) = compare_methods(LatentTarget(gan.generator), [("none", {})], args.n, seed=sd, score=score)
            fids.append(row["fid"])
        spread = {
            "seeds": seeds,
            "fid": fids,
            "mean": float(np.mean(fids)),
            "std": float(np.std(fids, ddof=1)) if len(fids) > 1 else 0.0,
        }
        log(f"raw generator FID over seeds {seeds}: {spread['mean']:.3f} +- {spread['std']:.3f}")
    raw = next((r for r in rows if r["method"] == "raw generator"), None)
    if raw is not None:
        for r in rows[1:]:
            if "fid" in r:
                r["fid_change"] = (r["fid"] - raw["fid"]) / raw["fid"]
    train_rec = WORK / "train_record.json"
    record = {
        "benchmark": "cifar10-jpg (small)",
        "date": today(),
        "machine": machine(),
        "threads": args.threads,
        "n": args.n,
        "seed": args.seed,
        "command": "python benchmarks/cifar10.py " + " ".join(sys.argv[1:]),
        "data": f"{data} (CIFAR-10 as JPEG quality 75; not the lossless dataset)",
        "recipe": json.loads(train_rec.read_text())
        if train_rec.is_file()
        else {k: "refine " + " ".join(v) for k, v in recipe(args.data).items()},
        "evaluator": {
            "network": clf_info.get("network", "ResNet-34 classifier, quarter width, stride-2 stem"),
            "test_accuracy": clf_meta.get("val_acc"),
            "features": "128-d feature layer",
            "reference": refs["clf"].describe(),
        },
        "dre_feature_net_val_acc": (torch.load(files["dre"], weights_only=True).get("meta") or {})
        .get("feature_net", {})
        .get("val_acc"),
        "raw_fid_other_seeds": spread,
        "files": {k: {"path": str(v.relative_to(REPO)), "sha256": file_sha256(v)} for k, v in files.items()},
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(record, out.with_suffix(".json"))
    with atomic_write(out.with_suffix(".md"), "w") as f:
        f.write(render(record))
    save_image_panels(out.with_suffix(".png"), grids, cols=5)
    _shrink_png(out.with_suffix(".png"))
    log(render(record))


def _shrink_png(path: Path) -> None:
    """Re-save the picture with a 256-colour palette (about a quarter of the size; the panels are for looking at, not for scoring)."""
    from PIL import Image

    from refine.io import atomic_write

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    with atomic_write(path) as f:
        small.save(f, format="PNG", optimize=True)


def render(rec: dict) -> str:
    def fmt(v, nd=3):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.{nd}f}"
        return str(v)

    sp = rec.get("raw_fid_other_seeds")
    ev = rec["evaluator"]
    lines = [
        "# CIFAR-10 (JPEG), small: refinement with discriminator ratios vs DRE-F-SP",
        "",
        f"{rec['machine']}; {rec['threads']} torch thread; {rec['date']}. n = {rec['n']} samples per method, seed {rec['seed']} (paired).",
        f"Generated by `{rec['command']}` after `python benchmarks/cifar10.py train`.",
        "",
        f"Data: {rec['data']}. FIDs here are not comparable with published CIFAR-10 numbers (JPEG data, small networks, "
        f"a dataset-trained classifier instead of Inception, n = {rec['n']}); read the differences between rows.",
        "",
        f"FID: in the 128-d feature space of a ResNet-34 classifier (quarter width, stride-2 stem) trained on the CIFAR-10 JPEG training "
        f"split (`refine train-classifier`, seed 1; test accuracy {fmt(ev['test_accuracy'], 4)}), against the "
        f"10,000 test images; precision/recall (k = 3) against 2,000 of them. fid_dre_space: FID in the DRE-F-SP feature network's own "
        f"space (validation accuracy {fmt(rec.get('dre_feature_net_val_acc'), 4)}), for reference only: the ratio was fitted there.",
    ]
    lines.append(
        'Ratios: "D" is the GAN\'s discriminator refitted for 2 epochs against the fixed generator with a logistic calibration '
        '(DRS / MH-GAN\'s recipe); "D as trained" is that discriminator as it ended GAN training, no refit, no calibration; '
        "DRE-F-SP is the ratio head on the frozen ResNet-34 features."
    )
    if sp:
        lines.append(
            f"Noise: the raw generator with seeds {sp['seeds']} scores FID {sp['mean']:.3f} ± {sp['std']:.3f} "
            f"(values {', '.join(f'{v:.3f}' for v in sp['fid'])})."
        )
    lines += ["", "Recipe:", ""]
    for k, v in rec["recipe"].get("commands", rec["recipe"]).items():
        secs = rec["recipe"].get("seconds", {}).get(k) if isinstance(rec["recipe"].get("seconds"), dict) else None
        lines.append(f"- {k}: `{v}`" + (f" ({secs / 60:.1f} min)" if secs else ""))
    cols = [
        ("method", "method"),
        ("fid", "FID"),
        ("fid_change", "change vs raw"),
        ("fid_dre_space", "fid_dre_space"),
        ("precision", "precision"),
        ("recall", "recall"),
        ("acceptance_rate", "acceptance"),
        ("g_evals_per_sample", "G evals / sample"),
        ("d_evals_per_sample", "ratio evals / sample"),
        ("wall_time_s", "seconds"),
    ]
    lines += ["", "| " + " | ".join(c[1] for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rec["rows"]:
        cells = []
        for key, _ in cols:
            v = r.get(key)
            if key == "fid_change" and v is not None:
                cells.append(f"{100 * v:+.1f}%")
            elif key in ("g_evals_per_sample", "d_evals_per_sample") and v is not None:
                cells.append(f"{v:.1f}")
            elif key == "wall_time_s" and v is not None:
                cells.append(f"{v:.0f}")
            else:
                cells.append(
                    fmt(v) if "error" not in r or key == "method" else (r["error"][:80] if key == "fid" else "–")
                )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser(
        "train", help="train the GAN, both ratios and the evaluation classifier into benchmarks/_work/cifar10"
    )
    t.add_argument("--data", default=DEFAULT_DATA, help="the CIFAR-10 JPEG zip or its extracted folder")
    t.add_argument(
        "--skip",
        default="",
        help="comma-separated steps to reuse from benchmarks/_work/cifar10: gan, d_ratio, dre, clf",
    )
    e = sub.add_parser("eval", help="score raw vs refined samples; writes benchmarks/results/cifar10.*")
    e.add_argument("--data", default=DEFAULT_DATA)
    e.add_argument("--n", type=int, default=2000, help="samples per method")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--methods", default="", help="comma-separated labels or sampler names to run (default: all)")
    e.add_argument("--progress", action="store_true")
    e.add_argument("--raw-seeds", type=int, default=3, help="also score the raw generator with this many other seeds")
    e.add_argument("--out", default=str(RESULTS / "cifar10"), help="result files prefix (.json, .md, .png)")
    args = p.parse_args()
    if not (REPO / args.data if not os.path.isabs(args.data) else Path(args.data)).exists():
        p.error(f"CIFAR-10 JPEG data {args.data} not found; pass --data")
    os.chdir(REPO)
    train(args) if args.cmd == "train" else evaluate(args)


if __name__ == "__main__":
    main()
