"""Gradient refiners (DDLS, DCD, DGflow, DOT) on two 25-Gaussian GAN pairs, before and after.

    python benchmarks/toy2d_gradient.py [--pair shipped|wgan|trained|all] [-n 2000] [--seeds N] [--quick]

Writes benchmarks/results/toy2d_gradient.{md,json,png} (``--quick``: toy2d_gradient_quick.*).

Two pairs, each scored in its own convention:

- ``shipped``: the shipped 25-Gaussian GAN and its fitted ratio (a logit), DRS grid
  (means {-2..2}^2, std 0.05); high quality = nearest mean within 4 std (DRS protocol).
- ``wgan``: the foreign WGAN generator/critic pair in ../shared/weights/gan/toy2d, WGAN-GP
  grid (means 2*{-2..2}/2.828, std 0.05/2.828); high quality = within 3 std. The critic is
  read as ``log r = critic / T`` with the temperature ``T`` given per row (DOT ignores T: its
  K_eff is estimated from the same scores).
- ``trained``: a WGAN-GP trained by this script with refine's ``wgan-gp`` method (the WGAN-GP
  paper's toy settings: lambda 0.1, 5 critic steps, Adam 1e-4, betas (0.5, 0.9); 60 epochs of
  50,000 points, batch 256, 128-unit MLPs, seed 0, 1-4 minutes on one CPU thread), refined
  with the ``wgan`` pair's settings unchanged; same grid and threshold.

Metrics on n samples per seed: high-quality (HQ) fraction, the factor by which the
low-quality fraction falls against the raw generator, modes with at least one HQ sample,
KL of the HQ mode histogram from uniform; cost as forward (fwd) and backward (bwd)
passes through G and D per output sample (including DOT's K_eff pairs and DCD's critic
fine-tuning, spread over the n samples) and wall time. Torch runs on 1 thread.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, mean_std, today  # noqa: E402

import refine  # noqa: E402
from refine.data.toy2d import get_mixture  # noqa: E402
from refine.generator import LatentGenerator, NormalPrior  # noqa: E402
from refine.io import atomic_write, load_gan, load_ratio, write_json  # noqa: E402
from refine.io.pretrained import pretrained_path  # noqa: E402
from refine.metrics.toy2d import mode_metrics  # noqa: E402
from refine.nets import build  # noqa: E402
from refine.ratio import DiscriminatorRatio  # noqa: E402
from refine.target import LatentTarget  # noqa: E402

SHARED = Path(os.environ.get("REFINE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
WGAN_DIR = SHARED / "weights" / "gan" / "toy2d"

# (label, method, options, critic temperature T (wgan pair only; None for the shipped logit ratio), uses real data)
CONFIGS = {
    "shipped": [
        ("raw generator", "none", {}, None),
        ("ddls, eps 1e-3, 100 steps", "ddls", {"step_size": 1e-3, "steps": 100}, None),
        ("ddls + MALA, eps 3e-3, 100 steps", "ddls", {"step_size": 3e-3, "steps": 100, "mala": True}, None),
        (
            "dcd latent, eps 1e-3, clip 100, 100 steps",
            "dcd",
            {"space": "latent", "step_size": 1e-3, "clip": 100.0, "steps": 100},
            None,
        ),
        ("dcd data, eps 3e-4, 300 steps", "dcd", {"space": "data", "step_size": 3e-4, "steps": 300}, None),
        (
            "dcd data + CD fine-tuning (1000 it.)",
            "dcd",
            {"space": "data", "step_size": 3e-4, "steps": 300, "finetune": 1000, "finetune_steps": 30},
            None,
        ),
        ("dgflow KL, eps 1e-3, 50 steps", "dgflow", {"divergence": "KL", "step_size": 1e-3, "steps": 50}, None),
        ("dgflow logD, eps 1e-3, 50 steps", "dgflow", {"divergence": "logD", "step_size": 1e-3, "steps": 50}, None),
        ("dgflow logD, eps 3e-3, 50 steps", "dgflow", {"divergence": "logD", "step_size": 3e-3, "steps": 50}, None),
        ("dgflow JS, eps 1e-3, 50 steps", "dgflow", {"divergence": "JS", "step_size": 1e-3, "steps": 50}, None),
        ("dot target (K_eff from 100 pairs)", "dot", {"space": "target"}, None),
        ("dot latent (k_eff from 100 pairs)", "dot", {"space": "latent"}, None),
    ],
    "wgan": [
        ("raw generator", "none", {}, 1.0),
        ("ddls T 0.01, eps 1e-4, 200 steps", "ddls", {"step_size": 1e-4, "steps": 200}, 0.01),
        ("ddls + MALA T 0.01, eps 3e-4, 200 steps", "ddls", {"step_size": 3e-4, "steps": 200, "mala": True}, 0.01),
        ("dcd data T 0.02, eps 1e-4, 100 steps", "dcd", {"space": "data", "step_size": 1e-4, "steps": 100}, 0.02),
        ("dgflow KL T 0.05, eps 1e-3, 50 steps", "dgflow", {"divergence": "KL", "step_size": 1e-3, "steps": 50}, 0.05),
        (
            "dgflow logD T 0.05, eps 1e-3, 50 steps",
            "dgflow",
            {"divergence": "logD", "step_size": 1e-3, "steps": 50},
            0.05,
        ),
        ("dgflow JS T 0.05, eps 1e-3, 50 steps", "dgflow", {"divergence": "JS", "step_size": 1e-3, "steps": 50}, 0.05),
        ("dot target (K_eff from 100 pairs)", "dot", {"space": "target"}, 1.0),
        ("dot latent (k_eff from 100 pairs)", "dot", {"space": "latent"}, 1.0),
    ],
}

# the WGAN-GP trained here gets the foreign pair's settings unchanged (no retuning)
CONFIGS["trained"] = [c for c in CONFIGS["wgan"] if "logD" not in c[0] and "JS" not in c[0]]

#: the WGAN-GP of the ``trained`` pair: the paper's toy settings, a CPU-sized run
TRAIN = {
    "dataset": "grid25-wgan",
    "epochs": 60,
    "n_train": 50_000,
    "batch_size": 256,
    "hidden": 128,
    "depth": 3,
    "seed": 0,
    "options": {"lr": 1e-4, "betas": [0.5, 0.9], "d_steps": 5, "gp_weight": 0.1},
}

PAIRS = {
    "shipped": {
        "mixture": "grid25",
        "threshold": 4.0,
        "seeds": 3,
        "title": "shipped GAN + fitted ratio (logit), DRS grid, HQ = within 4 std",
    },
    "wgan": {
        "mixture": "grid25-wgan",
        "threshold": 3.0,
        "seeds": 1,
        "title": "foreign WGAN pair (critic / T), WGAN-GP grid, HQ = within 3 std",
    },
    "trained": {
        "mixture": "grid25-wgan",
        "threshold": 3.0,
        "seeds": 1,
        "title": "WGAN-GP trained here (refine's wgan-gp, 60 epochs), critic / T, WGAN-GP grid, HQ = within 3 std",
    },
}


def train_wgan_gp(quick: bool) -> tuple:
    """Train the ``trained`` pair's WGAN-GP on the CPU; returns ``(generator, critic, record)``."""
    from refine.train.toy2d import train_toy

    cfg = dict(TRAIN, epochs=2) if quick else TRAIN
    t0 = time.perf_counter()
    run = train_toy(
        cfg["dataset"],
        epochs=cfg["epochs"],
        n_train=cfg["n_train"],
        batch_size=cfg["batch_size"],
        method="wgan-gp",
        hidden=cfg["hidden"],
        depth=cfg["depth"],
        rng=torch.Generator().manual_seed(cfg["seed"]),
        init_seed=cfg["seed"],
        method_options=dict(cfg["options"]),
    )
    record = {**cfg, "train_time_s": time.perf_counter() - t0, "last_epoch": run.meta["history"][-1]}
    run.generator.net.eval().requires_grad_(False)
    run.discriminator.eval().requires_grad_(False)
    print(
        f"[trained] wgan-gp: {cfg['epochs']} epochs in {record['train_time_s']:.0f}s, last epoch {record['last_epoch']}",
        flush=True,
    )
    return run.generator, run.discriminator, record


def load_pair(name: str, quick: bool = False):
    """``(generator, make_ratio(T), record)`` for a pair."""
    if name == "trained":
        gen, critic, record = train_wgan_gp(quick)
        return gen, lambda t: DiscriminatorRatio(critic, "critic", temperature=t), record
    if name == "shipped":
        gan = load_gan(pretrained_path("toy2d-grid25-gan"))
        ratio = load_ratio(pretrained_path("toy2d-grid25-ratio"))
        return gan.generator, lambda _t: ratio, None
    g = build("mlp", in_dim=2, out_dim=2, hidden=256, depth=3)
    d = build("mlp", in_dim=2, out_dim=1, hidden=512, depth=3)
    g.load_state_dict(torch.load(WGAN_DIR / "ddls_wgan_25Gauss_G_5000eps_state_dict.pt", weights_only=True))
    d.load_state_dict(torch.load(WGAN_DIR / "ddls_wgan_25Gauss_D_5000eps_state_dict.pt", weights_only=True))
    g.eval().requires_grad_(False)
    d.eval().requires_grad_(False)
    return LatentGenerator(g, NormalPrior((2,))), lambda t: DiscriminatorRatio(d, "critic", temperature=t), None


def cost(info: dict) -> dict:
    return {
        k: info.get(f"{k}_per_sample", info.get("g_evals_per_sample") if k == "g_evals" else 0.0)
        for k in ("g_evals", "g_backward", "d_evals", "d_backward")
    }


def run_pair(name: str, n: int, seeds: int, quick: bool) -> tuple[list[dict], dict]:
    spec = PAIRS[name]
    mixture = get_mixture(spec["mixture"])
    generator, make_ratio, record = load_pair(name, quick)
    rows, panels = [], {}
    for label, method, opts, temp in CONFIGS[name]:
        opts = dict(opts)
        if quick and "steps" in opts:
            opts["steps"] = max(2, opts["steps"] // 10)
        if quick and "finetune" in opts:
            opts["finetune"] = 5
        target = LatentTarget(generator, make_ratio(temp))
        per_seed = []
        for seed in range(seeds):
            real = (
                mixture.sample(20_000, rng=torch.Generator().manual_seed(10_000 + seed))
                if opts.get("finetune")
                else None
            )
            t0 = time.perf_counter()
            res = refine.sample(target, method, n, rng=torch.Generator().manual_seed(seed), real=real, **opts)
            wall = time.perf_counter() - t0
            m = mode_metrics(res.x, mixture, threshold=spec["threshold"])
            per_seed.append(
                {
                    "seed": seed,
                    **m,
                    "wall_time_s": wall,
                    **cost(res.info),
                    "acceptance_rate": res.info.get("acceptance_rate"),
                    "k_eff": res.info.get("k_eff"),
                }
            )
            if seed == 0:
                panels[label] = res.x.numpy()
        agg = lambda key: mean_std([r[key] for r in per_seed])  # noqa: E731
        row = {
            "pair": name,
            "label": label,
            "method": method,
            "options": opts,
            "temperature": temp,
            "seeds": seeds,
            "n": n,
            "hq_fraction": agg("hq_fraction"),
            "low_quality_fraction": mean_std([1 - r["hq_fraction"] for r in per_seed]),
            "modes": agg("modes"),
            "kl_uniform": agg("kl_uniform"),
            "wall_time_s": agg("wall_time_s"),
            **{k: agg(k) for k in ("g_evals", "g_backward", "d_evals", "d_backward")},
            "per_seed": per_seed,
        }
        if opts.get("mala"):
            row["acceptance_rate"] = agg("acceptance_rate")
        rows.append(row)
        print(
            f"[{name}] {label:44s} HQ {row['hq_fraction'][0]:.3f}  modes {row['modes'][0]:.1f}  KL {row['kl_uniform'][0]:.3f}  "
            f"{row['wall_time_s'][0]:.1f}s",
            flush=True,
        )
    raw = rows[0]
    for r in rows:
        r["lq_reduction_vs_raw"] = raw["low_quality_fraction"][0] / max(r["low_quality_fraction"][0], 1e-12)
        r["keeps_modes"] = r["modes"][0] >= raw["modes"][0]
        r["halves_lq_keeps_modes"] = r["lq_reduction_vs_raw"] >= 2 and r["keeps_modes"]
    if record is not None:
        for r in rows:
            r["training"] = record
    return rows, {"panels": panels, "means": np.asarray(mixture.means), "title": spec["title"]}


def table(rows: list[dict]) -> str:
    out = (
        "| setting | HQ fraction | LQ cut vs raw | modes (of 25) | KL(modes ‖ uniform) | G fwd / bwd | D fwd / bwd | time (s) |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    for r in rows:
        acc = f" (acc. {r['acceptance_rate'][0]:.2f})" if "acceptance_rate" in r else ""
        out += (
            f"| {r['label']}{acc} | {r['hq_fraction'][0]:.3f} | {r['lq_reduction_vs_raw']:.1f}× | {r['modes'][0]:.1f} | "
            f"{r['kl_uniform'][0]:.3f} | {r['g_evals'][0]:.0f} / {r['g_backward'][0]:.0f} | {r['d_evals'][0]:.0f} / {r['d_backward'][0]:.0f} | "
            f"{r['wall_time_s'][0]:.1f} |\n"
        )
    return out


def verdict(rows: list[dict]) -> str:
    methods = {}
    for r in rows[1:]:
        methods.setdefault(r["method"], []).append(r)
    lines = []
    for m, rs in methods.items():
        ok = [r["label"] for r in rs if r["halves_lq_keeps_modes"]]
        lines.append(
            f"- **{m}**: "
            + (
                f"halves the low-quality fraction with all modes in: {'; '.join(ok)}"
                if ok
                else "no setting here halves the low-quality fraction without losing a mode"
            )
        )
    best = max(rows[1:], key=lambda r: r["lq_reduction_vs_raw"] if r["keeps_modes"] else -1)
    lines.append(
        f"- best with all modes: {best['label']} ({best['lq_reduction_vs_raw']:.1f}× fewer low-quality samples)"
    )
    return "\n".join(lines) + "\n"


def save_figure(path: Path, figs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = 6
    blocks = {name: math.ceil(len(f["panels"]) / cols) for name, f in figs.items()}
    fig, axes = plt.subplots(
        sum(blocks.values()), cols, figsize=(2.3 * cols, 2.45 * sum(blocks.values())), squeeze=False
    )
    for ax in axes.flat:
        ax.set_visible(False)
    first = 0
    for name, f in figs.items():
        lim = float(np.abs(f["means"]).max()) * 1.35
        cells = axes[first : first + blocks[name]].flat
        first += blocks[name]
        for ax, (title, pts) in zip(cells, f["panels"].items()):
            ax.set_visible(True)
            ax.scatter(pts[:2000, 0], pts[:2000, 1], s=1.0, alpha=0.4, color="tab:blue", linewidths=0)
            ax.scatter(f["means"][:, 0], f["means"][:, 1], s=8, marker="x", color="tab:red", linewidths=0.6)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"[{name}] {title}", fontsize=6)
    fig.tight_layout()
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--pair",
        choices=["shipped", "wgan", "trained", "all"],
        default="all",
        help="which pair(s); 'trained' first trains a WGAN-GP on the CPU (1-4 minutes)",
    )
    ap.add_argument("-n", type=int, default=2000, help="output samples per run")
    ap.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per pair (default: 3 for the cheap shipped pair, 1 for the wgan pair)",
    )
    ap.add_argument("--quick", action="store_true", help="300 samples, chains a tenth as long: a smoke run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = 300 if args.quick else args.n
    pairs = ["shipped", "wgan", "trained"] if args.pair == "all" else [args.pair]
    if "wgan" in pairs and not WGAN_DIR.is_dir():
        print(f"skipping the wgan pair: {WGAN_DIR} is absent (set REFINE_SHARED)")
        pairs.remove("wgan")
    all_rows, figs = [], {}
    for p in pairs:
        rows, figs[p] = run_pair(p, n, 1 if args.quick else (args.seeds or PAIRS[p]["seeds"]), args.quick)
        all_rows += rows
    cmd = (
        "python benchmarks/toy2d_gradient.py"
        + (" --quick" if args.quick else "")
        + (f" --pair {args.pair}" if args.pair != "all" else "")
    )
    seeds = {p: all_rows[[r["pair"] for r in all_rows].index(p)]["seeds"] for p in pairs}
    header = (
        f"Machine: {machine()}, torch on 1 thread. Date: {today()}. {n} samples × seeds {seeds} (mean; ± std over seeds in the JSON); `{cmd}`.\n"
        "HQ = nearest mode within 4 std (DRS grid) or 3 std (WGAN-GP grid); LQ cut = raw low-quality fraction / this one; "
        "passes per output sample.\n"
    )
    body = ""
    for p in pairs:
        rows = [r for r in all_rows if r["pair"] == p]
        body += f"\n### {PAIRS[p]['title']}\n\n" + table(rows) + "\n" + verdict(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "toy2d_gradient_quick" if args.quick else "toy2d_gradient"
    with atomic_write(args.out / f"{stem}.md", "w") as fh:
        fh.write(header + body)
    write_json(
        {"machine": machine(), "date": today(), "seeds": seeds, "n": n, "command": cmd, "rows": all_rows},
        args.out / f"{stem}.json",
    )
    save_figure(args.out / f"{stem}.png", figs)
    print(header + body)


if __name__ == "__main__":
    main()
