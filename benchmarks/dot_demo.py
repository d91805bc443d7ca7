"""The DOT paper's 2-D demo on its own convention: a WGAN-GP on 25 Gaussians, then DOT.

    python benchmarks/dot_demo.py [--seeds 3] [-n 1000] [--epochs 12] [--quick]

Writes benchmarks/results/dot_demo.{json,md,png} (``--quick``: dot_demo_quick.*).

Setup, after the reference (``AkinoriTanaka-phys/DOT``, ``demo_2d.ipynb``, ``model.py``):

- data: 25 Gaussians, means ``2*{-2..2}/2.828``, std ``0.05/2.828`` (``grid25-wgan``);
- G 2->256->256->256->2 and D 2->512->512->512->1, leaky ReLU (slope 0.2), latent
  ``z ~ U[-1, 1]^2``; trained with refine's ``wgan-gp`` method using the reference
  repository's WGAN-GP optimiser (``train_GAN.py``: Adam 2e-4, betas (0, 0.9), 5 critic
  steps) with the WGAN-GP paper's toy penalty 0.1 (the reference's image penalty, 10, left
  the generator on 14 of 25 modes with HQ 0.02 after 6 epochs, against 22 modes and 0.05
  with 0.1: ``--gp 10``), batch 64, ``--epochs`` passes over 50,000 points (a CPU-sized run,
  about 1 minute per epoch on a shared 2-core machine: the reference ships its trained 2-D
  networks, not how long it trained them);
- DOT with refine's defaults (which follow the reference): Adam lr 0.01, betas (0, 0.9),
  100 updates, K_eff the mean of 10 maxima over 100 pairs; in data space (the reference's
  demo) and in latent space (z kept in the prior's box).

Metrics on n samples (the reference's demo draws 1000): high-quality (HQ) fraction (nearest
mean within 4 std, the DRS protocol, and within 3 std, VEEGAN's), modes with at least one
HQ sample, low-quality fraction (1 - HQ at 4 std) before and after and their ratio. Torch
runs on 1 thread; seeds fix network initialisation, data, latents and DOT's pairs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, mean_std, today, write_results  # noqa: E402

import refine  # noqa: E402
from refine.data.toy2d import get_mixture  # noqa: E402
from refine.metrics.toy2d import mode_metrics  # noqa: E402
from refine.ratio import DiscriminatorRatio  # noqa: E402
from refine.target import LatentTarget  # noqa: E402

MIXTURE = "grid25-wgan"
REFERENCE_HQ = 0.698  # "25Gaussians high quality", as quoted for the reference
TRAIN = {
    "dataset": MIXTURE,
    "n_train": 50_000,
    "batch_size": 64,
    "hidden": 256,
    "disc_hidden": 512,
    "depth": 3,
    "activation": "leaky_relu",
    "prior": "uniform",
    "options": {"lr": 2e-4, "betas": [0.0, 0.9], "d_steps": 5, "gp_weight": 0.1},
}
#: (label, space, extra options): the defaults in both spaces, then diagnostics of what limits DOT
ROWS = [
    ("raw generator", None, {}),
    ("dot data (defaults)", "data", {}),
    ("dot latent (defaults)", "latent", {}),
]
DIAGNOSTICS = [
    ("dot data, 300 Adam steps", "data", {"steps": 300}),
    ("dot data, K_eff x 0.5", "data", {"k_scale": 0.5}),
    ("dot data, sgd (before: one max, eps 0.02)", "data", {"optimizer": "sgd", "k_eff_repeats": 1}),
    ("dot latent, 300 Adam steps", "latent", {"steps": 300}),
    ("dot latent, k_eff x 0.5", "latent", {"k_scale": 0.5}),
]


def train(seed: int, epochs: int, track: int = 0, n: int = 1000):
    """The WGAN-GP pair of ``seed``; with ``track``, the default rows are also scored every ``track``
    epochs during training (returned as the fourth value)."""
    from refine.train.toy2d import train_toy

    tracked: list[dict] = []

    def on_epoch(epoch: int, run, _trainer) -> None:
        if not track or epoch % track:
            return
        nets = (run.generator.net, run.discriminator)
        state = [(m, m.training, [(q, q.requires_grad) for q in m.parameters()]) for m in nets]
        for m in nets:  # scored as they are now, without touching their gradients or training mode
            m.eval().requires_grad_(False)
        t1 = time.perf_counter()
        res = evaluate_rows(LatentTarget(run.generator, DiscriminatorRatio(run.discriminator, "critic")), ROWS, n, seed)
        tracked.append(
            {
                "epoch": epoch,
                "time_s": time.perf_counter() - t1,
                "rows": [{k: r[k] for k in ("label", "hq4", "modes", "k_eff")} for r in res],
            }
        )
        for m, training, flags in state:
            m.train(training)
            for q, flag in flags:
                q.requires_grad_(flag)

    t0 = time.perf_counter()
    run = train_toy(
        TRAIN["dataset"],
        epochs=epochs,
        n_train=TRAIN["n_train"],
        batch_size=TRAIN["batch_size"],
        method="wgan-gp",
        hidden=TRAIN["hidden"],
        disc_hidden=TRAIN["disc_hidden"],
        depth=TRAIN["depth"],
        activation=TRAIN["activation"],
        prior=TRAIN["prior"],
        rng=torch.Generator().manual_seed(seed),
        init_seed=seed,
        method_options=dict(TRAIN["options"]),
        on_epoch=on_epoch,
    )
    secs = time.perf_counter() - t0 - sum(t["time_s"] for t in tracked)
    run.generator.net.eval().requires_grad_(False)
    run.discriminator.eval().requires_grad_(False)
    print(f"[seed {seed}] wgan-gp: {epochs} epochs in {secs:.0f}s, last epoch {run.meta['history'][-1]}", flush=True)
    return run.generator, run.discriminator, secs, tracked


def evaluate_rows(target, rows, n: int, seed: int) -> list[dict]:
    mixture = get_mixture(MIXTURE)
    out = []
    for label, space, opts in rows:
        opts = dict(opts)
        rng = torch.Generator().manual_seed(1000 + seed)
        t0 = time.perf_counter()
        if space is None:
            res = refine.sample(target, "none", n, rng=rng)
        else:
            scale = opts.pop("k_scale", None)
            if scale is not None:  # the default estimate, scaled: how much K_eff holds DOT back
                k = refine.samplers.dot.estimate_k_eff(
                    target, 100, space=space, rng=torch.Generator().manual_seed(1000 + seed), repeats=10
                )
                opts["k_eff"] = scale * k
            res = refine.sample(target, "dot", n, rng=rng, space=space, **opts)
        secs = time.perf_counter() - t0
        m4 = mode_metrics(res.x, mixture, threshold=4.0)
        m3 = mode_metrics(res.x, mixture, threshold=3.0)
        out.append(
            {
                "label": label,
                "hq4": m4["hq_fraction"],
                "hq3": m3["hq_fraction"],
                "modes": m4["modes"],
                "lq4": 1.0 - m4["hq_fraction"],
                "k_eff": res.info.get("k_eff"),
                "k_eff_min": res.info.get("k_eff_min"),
                "k_eff_max": res.info.get("k_eff_max"),
                "time_s": secs,
                "x": res.x.detach().cpu().numpy(),
            }
        )
        print(
            f"[seed {seed}] {label}: HQ4 {m4['hq_fraction']:.3f} HQ3 {m3['hq_fraction']:.3f} "
            f"modes {m4['modes']} K {res.info.get('k_eff')} ({secs:.1f}s)",
            flush=True,
        )
    raw = out[0]["lq4"]
    for r in out:
        r["lq_reduction"] = raw / r["lq4"] if r["lq4"] > 0 else float("inf")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--gp", type=float, default=TRAIN["options"]["gp_weight"], help="gradient-penalty weight")
    ap.add_argument("--out", default=None, help="results name (default dot_demo)")
    ap.add_argument("--no-diagnostics", action="store_true")
    ap.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 200 samples (a smoke test)")
    ap.add_argument(
        "--track",
        type=int,
        default=0,
        help="also score raw and DOT every this many epochs of training (0: at the end only)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    TRAIN["options"]["gp_weight"] = float(args.gp)
    seeds = 1 if args.quick else args.seeds
    epochs = 1 if args.quick else args.epochs
    n = 200 if args.quick else args.n
    rows = ROWS + ([] if args.no_diagnostics else DIAGNOSTICS)
    per_seed, pictures = [], {}
    for seed in range(seeds):
        gen, critic, secs, tracked = train(seed, epochs, args.track, n)
        target = LatentTarget(gen, DiscriminatorRatio(critic, "critic"))
        res = evaluate_rows(target, rows, n, seed)
        for r in res:
            if seed == 0:
                pictures[r["label"]] = r["x"]
            r.pop("x")
        per_seed.append({"seed": seed, "train_time_s": secs, "rows": res, "track": tracked})
    summary = []
    for i, (label, _s, _o) in enumerate(rows):
        vals = [ps["rows"][i] for ps in per_seed]
        entry = {"label": label}
        for key in ("hq4", "hq3", "modes", "lq4", "lq_reduction", "k_eff", "time_s"):
            xs = [v[key] for v in vals if v[key] is not None]
            if xs:
                entry[key], entry[key + "_std"] = mean_std(xs)
        entry["modes_min"] = min(v["modes"] for v in vals)
        summary.append(entry)
    record = {
        "benchmark": "dot_demo",
        "machine": machine(),
        "date": today(),
        "torch_threads": 1,
        "n": n,
        "seeds": seeds,
        "train": {**TRAIN, "epochs": epochs},
        "reference_hq": REFERENCE_HQ,
        "track": args.track,
        "rows": summary,
        "per_seed": per_seed,
    }
    name = args.out or ("dot_demo_quick" if args.quick else "dot_demo")
    plot(pictures, RESULTS / f"{name}.png")
    write_results(name, record, render(record))


def render(record: dict) -> str:
    t = record["train"]
    lines = [
        "# DOT on the paper's 2-D demo (WGAN-GP, 25 Gaussians, uniform latent)",
        "",
        f"{record['date']}, {record['machine']}, 1 torch thread; n = {record['n']} samples per seed, "
        f"{record['seeds']} seeds (mean ± std over seeds).",
        f"WGAN-GP: G 2-{t['hidden']}x{t['depth']}-2, D 2-{t['disc_hidden']}x{t['depth']}-1, {t['activation']}, "
        f"z ~ U[-1,1]^2, Adam {t['options']['lr']:g} betas {tuple(t['options']['betas'])}, "
        f"{t['options']['d_steps']} critic steps, GP {t['options']['gp_weight']:g}, batch {t['batch_size']}, "
        f"{t['epochs']} epochs of {t['n_train']} points.",
        f"Reference (25Gaussians high quality): {record['reference_hq']}.",
        "",
        "| setting | HQ (4 std) | HQ (3 std) | modes (min) | low-quality | LQ reduction | K_eff | time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        k = f"{r['k_eff']:.3g} ± {r['k_eff_std']:.2g}" if "k_eff" in r else "-"
        lines.append(
            f"| {r['label']} | {r['hq4']:.3f} ± {r['hq4_std']:.3f} | {r['hq3']:.3f} ± {r['hq3_std']:.3f} "
            f"| {r['modes']:.1f} ({r['modes_min']}) | {r['lq4']:.3f} | {r['lq_reduction']:.2f}x | {k} | {r['time_s']:.1f} |"
        )
    if record.get("track"):
        lines += ["", training_table(record)]
    lines += ["", "Per seed (HQ at 4 std, modes, K_eff):", ""]
    for ps in record["per_seed"]:
        cells = ", ".join(
            f"{r['label']}: {r['hq4']:.3f} / {r['modes']}" + (f" / K {r['k_eff']:.3g}" if r["k_eff"] else "")
            for r in ps["rows"]
        )
        lines.append(f"- seed {ps['seed']} (training {ps['train_time_s']:.0f}s): {cells}")
    return "\n".join(lines) + "\n"


def training_table(record: dict) -> str:
    """HQ of the raw generator and of DOT at its defaults as training goes on (mean ± std over seeds)."""
    labels = [label for label, _s, _o in ROWS]
    lines = [
        "| epochs | " + " | ".join(f"HQ (4 std): {label}" for label in labels) + " | modes: raw | K_eff (data) |",
        "|---" * (len(labels) + 3) + "|",
    ]
    for i, point in enumerate(record["per_seed"][0]["track"]):
        at = [ps["track"][i] for ps in record["per_seed"]]
        cells = []
        for j in range(len(labels)):
            m, sd = mean_std([a["rows"][j]["hq4"] for a in at])
            cells.append(f"{m:.3f} ± {sd:.3f}")
        modes = mean_std([a["rows"][0]["modes"] for a in at])[0]
        k = mean_std([a["rows"][1]["k_eff"] for a in at])[0]
        lines.append(f"| {point['epoch']} | " + " | ".join(cells) + f" | {modes:.1f} | {k:.3g} |")
    return "\n".join(lines)


def plot(pictures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("raw generator", "dot data (defaults)", "dot latent (defaults)") if k in pictures]
    means = get_mixture(MIXTURE).means_tensor().numpy()
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 4))
    for ax, k in zip(np.atleast_1d(axes), keys):
        x = pictures[k]
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.5)
        ax.scatter(means[:, 0], means[:, 1], s=8, c="red", marker="x")
        ax.set_title(f"{k} (seed 0)")
        ax.set_xlim(-1.8, 1.8)
        ax.set_ylim(-1.8, 1.8)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
