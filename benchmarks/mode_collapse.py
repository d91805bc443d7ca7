"""Mode-collapse benchmark: the training methods on 2-D mixtures and stacked MNIST, before and after refinement.

For every dataset, method and seed: train a generator (``refine.train.toy2d.train_toy``), draw
2,500 samples and score them (VEEGAN protocol: a sample is high quality (HQ) within 3 std of
its nearest mean; a mode is covered when it has at least one HQ sample; LBT's intra-mode KL);
then fit a discriminator to the final generator (``fit_discriminator``: the method's own
discriminator on x, or a fresh MLP for VEEGAN / LBT, which have none) and draw 2,500 samples
with each sampler (rs, drs, mh, sir) from the refined target. Stacked MNIST (three MNIST
digits as the channels of one image, 1,000 modes) counts modes with an MNIST classifier
trained here and reports the KL of the mode histogram to uniform.

    python benchmarks/mode_collapse.py --config paper --part 2d --merge benchmarks/results/mode_collapse_recipe.json
                                                   # the published results: GAN, Unrolled GAN and VEEGAN in their papers'
                                                   # 2-D setups (PAPER_2D), the other rows and stacked MNIST kept from the recipe run
    python benchmarks/mode_collapse.py             # every method in one shared recipe (--config cpu, about 45 min on 2 cores)
    python benchmarks/mode_collapse.py --quick     # smoke run (about a minute)
    python benchmarks/mode_collapse.py --stacked full --device cuda   # the full stacked-MNIST configuration, GPU
    python benchmarks/mode_collapse.py --part 2d   # only the 2-D mixtures (or --part stacked)
    python benchmarks/mode_collapse.py --config long --part 2d   # VEEGAN trained 5x longer

Writes ``benchmarks/results/mode_collapse.{md,json,png}`` for ``--config paper`` (``--out`` to change; ``--config cpu``
writes ``mode_collapse_recipe.*``, a ``--quick`` run ``mode_collapse_quick.*``, ``--config long`` ``mode_collapse_long.*``) and
``<prefix>_stacked.png``. MNIST is read from
``$REFINE_SHARED/data/mnist`` (default ``../shared`` next to the repository) or ``--mnist``.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

import common  # noqa: E402
from common import machine, mean_std  # noqa: E402

import refine  # noqa: E402,F401  (registers methods and samplers)
from refine.data.toy2d import get_mixture  # noqa: E402
from refine.errors import BudgetExceededError  # noqa: E402
from refine.generator import LatentGenerator, NormalPrior  # noqa: E402
from refine.io import atomic_write, write_json  # noqa: E402
from refine.metrics.toy2d import mode_metrics  # noqa: E402
from refine.nets import arch_config, build_from_config  # noqa: E402
from refine.ratio.discriminator import DiscriminatorRatio  # noqa: E402
from refine.samplers import get_sampler  # noqa: E402
from refine.target import LatentTarget  # noqa: E402
from refine.train import fit, fit_discriminator, get_method, list_methods  # noqa: E402
from refine.train.toy2d import check_method_options, method_networks, train_toy  # noqa: E402

# --------------------------------------------------------------------------- configuration
#: Published numbers quoted in the issue (VEEGAN paper, Table 1 / 2): modes and %HQ on the 2-D
#: mixtures, modes and KL on stacked MNIST.
REFERENCE = {
    "ring8": {"gan": (1, 99.3), "unrolled": (7.6, 35.6), "veegan": (8, 52.9)},
    "grid25-veegan": {"gan": (3.3, 0.5), "unrolled": (23.6, 16.0), "veegan": (24.6, 40.0)},
    "stacked-mnist": {"gan": (99, 3.4), "unrolled": (48.7, 4.32), "veegan": (150, 2.95)},
}

METHODS = ["gan", "gan-gp", "wgan-gp", "unrolled", "veegan", "lbt", "lbt-gan", "alphagan"]
DATASETS = ["ring8", "grid25-veegan", "ring8-lbt"]
SAMPLERS = {"rs": {"m_quantile": 1.0}, "drs": {}, "mh": {"k": 100}, "sir": {"candidates": 20}}  # rs: exact

#: The papers' 2-D configurations (--config paper). Sources:
#: - Unrolled GAN: the reference notebook of Metz et al. (github.com/poolio/unrolled_gan, "Unrolled GAN demo.ipynb"):
#:   z ~ N(0, I_256), batch 512, G and D 2 x 128 tanh, Adam beta1 0.5 with lr 1e-3 (G) and 1e-4 (D), 5 unrolling steps
#:   (Adam, from the discriminator optimiser's moments), G maximises the discriminator's loss at the unrolled parameters
#:   (the saddle objective), 25,000 iterations. Not reproduced: its orthogonal initialisation (gain 1.4).
#: - GAN: the same notebook with 0 unrolling steps is its GAN baseline; here the non-saturating GAN with the notebook's
#:   networks, latent, batch and learning rates.
#: - VEEGAN: the 2-D code of Srivastava et al. (github.com/akashgit/VEEGAN, VEEGAN_2D_RING.ipynb, read through a public port
#:   that keeps its parameters): noise of 254 dims plus 1 dim of extra noise (eps) into G, batch 500, G, reconstructor and
#:   joint discriminator 2 x 128 ReLU (the port's D has one hidden layer), Adam (lr 1e-3, beta1 0.5) for G, F and D, a
#:   stochastic unit-variance Gaussian reconstructor (rec_std 1: D's data pairs are (F(x) + N(0, I), x), as in the paper's
#:   Algorithm 1, and the autoencoding loss is its NLL 0.5 ||z - F(G(z))||^2). The port trains 100,000 iterations.
#: Iterations: PAPER_STEPS for every method (CPU budget; 25,000 in the Unrolled notebook), the same for all three.
PAPER_STEPS = 7500
PAPER_2D = {
    "gan": {"latent_dim": 256, "batch_size": 512, "activation": "tanh", "options": {"lr": 1e-3, "lr_d": 1e-4}},
    "unrolled": {
        "latent_dim": 256,
        "batch_size": 512,
        "activation": "tanh",
        "options": {"lr": 1e-3, "lr_d": 1e-4, "unroll": 5, "g_loss": "saddle"},
    },
    "veegan": {
        "latent_dim": 255,
        "batch_size": 500,
        "activation": "relu",
        "options": {"lr": 1e-3, "eps_dim": 1, "rec_std": 1.0},
    },
}

#: Variants of PAPER_2D tried in one-seed probes (--variant NAME with --config paper); every one tried is listed in the
#: results markdown (PROBES), not only the adopted configuration.
PAPER_VARIANTS = {
    # VEEGAN with a deterministic reconstructor (the method's default) and the Gaussian NLL weight 0.5, before rec_std existed.
    "veegan-deterministic": ("veegan", {"lr": 1e-3, "eps_dim": 1, "rec_weight": 0.5}),
}
#: One-seed probes run before the full paper run (seed 0, grid25-veegan, 2-core CPU, 2026-11-21), with their commands.
PROBES = [
    (
        "--config paper --part 2d --methods gan,unrolled,veegan --datasets grid25-veegan --seeds 1 --steps 500 --variant veegan-deterministic",
        "500 steps (timing probe): gan 8 modes / 1.7% HQ, unrolled 20 / 2.1%, veegan (deterministic F) 1 / 0.0%",
    ),
    (
        "--config paper --part 2d --methods veegan --datasets grid25-veegan --seeds 1 --steps 7500 --variant veegan-deterministic",
        "veegan, deterministic F: 4 modes / 0.3% HQ (the generator stuck in one corner)",
    ),
    (
        "--config paper --part 2d --methods veegan --datasets grid25-veegan --seeds 1 --steps 7500",
        "veegan, stochastic Gaussian reconstructor (rec_std 1, the adopted configuration): 25 modes / 39.6% HQ",
    ),
]

CONFIGS = {
    # 2-D: G z(2) -> 128 -> 128 -> 2, every other network 128 x 2 hidden layers, Adam 1e-3 (0.5, 0.999), batch 256.
    "cpu": {
        "seeds": 3,
        "hidden": 128,
        "depth": 2,
        "latent_dim": 2,
        "batch_size": 256,
        "n_train": 51_200,
        "steps": 2000,
        "expensive_steps": 600,
        "n_eval": 2500,
        "refit_epochs": 5,
        "datasets": DATASETS,
        "methods": METHODS,
    },
    # VEEGAN trained 5x longer (10,000 steps): run with --config long.
    "long": {
        "seeds": 3,
        "hidden": 128,
        "depth": 2,
        "latent_dim": 2,
        "batch_size": 256,
        "n_train": 51_200,
        "steps": 10_000,
        "expensive_steps": 3000,
        "n_eval": 2500,
        "refit_epochs": 5,
        "datasets": ["ring8", "grid25-veegan"],
        "methods": ["veegan"],
    },
    # The papers' own 2-D setups for the three methods of VEEGAN's Table 1 (PAPER_2D, per method); --merge keeps the other rows.
    "paper": {
        "seeds": 3,
        "hidden": 128,
        "depth": 2,
        "latent_dim": 2,
        "batch_size": 256,
        "n_train": 51_200,
        "steps": PAPER_STEPS,
        "expensive_steps": 600,
        "n_eval": 2500,
        "refit_epochs": 5,
        "datasets": ["ring8", "grid25-veegan"],
        "methods": ["gan", "unrolled", "veegan"],
        "per_method": PAPER_2D,
    },
    "quick": {
        "seeds": 1,
        "hidden": 32,
        "depth": 2,
        "latent_dim": 2,
        "batch_size": 256,
        "n_train": 12_800,
        "steps": 150,
        "expensive_steps": 50,
        "n_eval": 2500,
        "refit_epochs": 1,
        "datasets": ["ring8", "grid25-veegan"],
        "methods": METHODS,
    },
}
#: Per-method options in the 2-D runs (the rest are the methods' defaults).
#: Unrolled GAN uses its paper's learning rate (Metz et al.: Adam 1e-4); at the recipe's 1e-3 it loses modes.
METHOD_OPTIONS = {"unrolled": {"unroll": 5, "lr": 1e-4}, "lbt": {"unroll": 5}, "lbt-gan": {"unroll": 5}}
#: LBT's ring (std 0.1) is run for the methods LBT compares with, to keep the CPU budget.
DATASET_METHODS = {"ring8-lbt": ["gan", "unrolled", "veegan", "lbt", "lbt-gan"]}
#: Methods whose step costs several plain-GAN steps (unrolled updates) train for ``expensive_steps``.
EXPENSIVE = {"lbt", "lbt-gan"}

STACKED = {
    "small": {
        "n_train": 25_600,
        "hidden": 256,
        "depth": 2,
        "latent_dim": 32,
        "batch_size": 128,
        "steps": 1200,
        "n_eval": 10_000,
        "classifier_epochs": 1,
        "classifier_limit": 30_000,
        "methods": ["gan", "unrolled", "veegan"],
        "options": {"unrolled": {"unroll": 2}},
        "seeds": 1,
    },
    "quick": {
        "n_train": 2_560,
        "hidden": 64,
        "depth": 2,
        "latent_dim": 16,
        "batch_size": 128,
        "steps": 40,
        "n_eval": 2_000,
        "classifier_epochs": 1,
        "methods": ["gan", "veegan"],
        "options": {},
        "seeds": 1,
        "classifier_limit": 6_000,
    },
    # The configuration for a GPU: DCGAN-sized widths are out of reach of the MLPs here, so wider and longer.
    "full": {
        "n_train": 128_000,
        "hidden": 1024,
        "depth": 3,
        "latent_dim": 100,
        "batch_size": 64,
        "steps": 50_000,
        "n_eval": 26_000,
        "classifier_epochs": 3,
        "methods": ["gan", "gan-gp", "unrolled", "veegan", "lbt-gan", "alphagan"],
        "options": {"unrolled": {"unroll": 5}},
        "seeds": 3,
    },
}


def pm(values, fmt="{:.1f}") -> str:
    return common.pm(values, fmt)


# --------------------------------------------------------------------------- 2-D metrics
def truncated_variance_factor(threshold: float) -> float:
    """Per-coordinate variance of a 2-D isotropic unit Gaussian restricted to the disc of radius ``threshold``."""
    a = threshold * threshold / 2
    return (1 - (1 + a) * math.exp(-a)) / (1 - math.exp(-a))


@torch.no_grad()
def intra_mode_kl(x: torch.Tensor, mixture, *, threshold: float = 3.0, min_count: int = 5) -> float:
    """LBT's intra-mode KL, made concrete: mean over covered modes of KL(N(m_k, C_k) || N(mu_k, s^2 I)).

    ``m_k, C_k``: mean and covariance of the high-quality samples nearest mode ``k``;
    ``s^2``: the mode's variance restricted to the same 3-std disc (so that exact samples
    score about 0). Modes with fewer than ``min_count`` HQ samples are left out.
    """
    x = x.double().cpu()
    means = mixture.means_tensor(dtype=torch.float64)
    dist, idx = torch.cdist(x, means).min(1)
    hq = dist < threshold * mixture.std
    s2 = mixture.std**2 * truncated_variance_factor(threshold)
    kls = []
    for k in range(mixture.n_modes):
        pts = x[hq & (idx == k)]
        if len(pts) < min_count:
            continue
        m = pts.mean(0)
        c = torch.cov(pts.T) + 1e-12 * torch.eye(2, dtype=torch.float64)
        kl = 0.5 * (torch.trace(c) / s2 + ((m - means[k]) ** 2).sum() / s2 - 2 + 2 * math.log(s2) - torch.logdet(c))
        kls.append(float(kl))
    return float(np.mean(kls)) if kls else float("nan")


def score_2d(x: torch.Tensor, mixture) -> dict:
    r = mode_metrics(x, mixture, threshold=3.0)
    return {
        "modes": r["modes"],
        "hq": 100 * r["hq_fraction"],
        "kl_uniform": r["kl_uniform"],
        "intra_kl": intra_mode_kl(x, mixture),
    }


# --------------------------------------------------------------------------- refinement
def fitted_ratio(
    G: LatentGenerator, D: nn.Module | None, real: torch.Tensor, *, hidden: int, depth: int, epochs: int, seed: int
):
    """A discriminator fitted to the final generator: the method's own (copied) or, without one, a fresh MLP."""
    import copy

    if D is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            D = build_from_config(arch_config("mlp", in_dim=real.shape[1], out_dim=1, hidden=hidden, depth=depth)).to(
                real.device
            )
        fresh = True
    else:
        D, fresh = copy.deepcopy(D), False
    hist = fit_discriminator(G, D, real, epochs=epochs, batch_size=512, rng=torch.Generator().manual_seed(seed + 17))
    D.eval().requires_grad_(False)
    return DiscriminatorRatio(D, "logit"), {"fresh": fresh, "acc": hist[-1]["acc"] if hist else None}


def refine_and_score(G, ratio, n: int, seed: int, score) -> tuple[dict, dict]:
    """Scores of each sampler's output, and the outputs."""
    target = LatentTarget(G, ratio)
    out, xs = {}, {}
    for name, opts in SAMPLERS.items():
        s = get_sampler(name, **opts)
        t0 = time.perf_counter()
        try:
            res = s.sample(target, n, rng=torch.Generator().manual_seed(seed + 1000))
        except BudgetExceededError as e:  # exact RS with a very peaked ratio: reported, not hidden
            out[name] = {
                "modes": None,
                "hq": None,
                "kl_uniform": None,
                "intra_kl": None,
                "failed": str(e).split(";")[0],
                "time_s": time.perf_counter() - t0,
            }
            continue
        out[name] = {
            **score(res.x),
            "acceptance_rate": res.info.get("acceptance_rate"),
            "g_evals_per_sample": res.info.get("g_evals_per_sample"),
            "time_s": time.perf_counter() - t0,
        }
        xs[name] = res.x
    return out, xs


# --------------------------------------------------------------------------- 2-D runs
def run_2d(cfg: dict, methods: list[str], datasets: list[str], device, log) -> tuple[list[dict], dict]:
    rows, samples = [], {}
    for ds in datasets:
        mixture = get_mixture(ds)
        for method in [m for m in methods if m in DATASET_METHODS.get(ds, methods)]:
            steps = cfg["expensive_steps"] if method in EXPENSIVE else cfg["steps"]
            pm_cfg = cfg.get("per_method", {}).get(method)
            setup = (
                {
                    "latent_dim": cfg["latent_dim"],
                    "batch_size": cfg["batch_size"],
                    "activation": "relu",
                    "options": METHOD_OPTIONS.get(method, {}),
                }
                if pm_cfg is None
                else pm_cfg
            )
            steps_per_epoch = cfg["n_train"] // setup["batch_size"]
            epochs = max(1, round(steps / steps_per_epoch))
            for seed in range(cfg["seeds"]):
                t0 = time.perf_counter()
                run = train_toy(
                    ds,
                    epochs=epochs,
                    n_train=cfg["n_train"],
                    method=method,
                    hidden=cfg["hidden"],
                    depth=cfg["depth"],
                    latent_dim=setup["latent_dim"],
                    batch_size=setup["batch_size"],
                    rng=torch.Generator().manual_seed(seed),
                    device=device,
                    method_options=setup["options"] or None,
                    init_seed=seed,
                    activation=setup["activation"],
                )
                train_s = time.perf_counter() - t0
                G = run.generator
                G.net.eval().requires_grad_(False)
                _, x = G.sample(cfg["n_eval"], rng=torch.Generator().manual_seed(seed + 500))
                before = score_2d(x, mixture)
                t1 = time.perf_counter()
                real = mixture.sample(50_000, rng=torch.Generator().manual_seed(seed + 300)).to(device)
                ratio, fit_info = fitted_ratio(
                    G,
                    run.discriminator,
                    real,
                    hidden=cfg["hidden"],
                    depth=cfg["depth"],
                    epochs=cfg["refit_epochs"],
                    seed=seed,
                )
                after, xs = refine_and_score(G, ratio, cfg["n_eval"], seed, lambda v: score_2d(v, mixture))
                row = {
                    "dataset": ds,
                    "method": method,
                    "seed": seed,
                    "steps": epochs * steps_per_epoch,
                    "options": setup["options"],
                    "setup": "paper" if pm_cfg is not None else "recipe",
                    "latent_dim": setup["latent_dim"],
                    "batch_size": setup["batch_size"],
                    "activation": setup["activation"],
                    "train_time_s": train_s,
                    "refine_time_s": time.perf_counter() - t1,
                    "before": before,
                    "ratio_fit": fit_info,
                    "after": after,
                }
                rows.append(row)
                if seed == 0:
                    samples[(ds, method)] = (x.cpu().numpy(), xs["drs"].cpu().numpy())
                log(
                    f"{ds:14s} {method:9s} seed {seed}: {row['steps']} steps {train_s:5.1f}s | modes {before['modes']:2d} HQ {before['hq']:5.1f}% "
                    f"intra-KL {before['intra_kl']:.3f} | after "
                    + " ".join(f"{k} {v['modes']}/{v['hq'] or 0:.1f}%" for k, v in after.items()).replace(
                        "None/", "failed/"
                    )
                    + f" ({row['refine_time_s']:.1f}s)"
                )
    return rows, samples


def summarise_2d(rows: list[dict], methods, datasets) -> dict:
    out = {}
    for ds in datasets:
        for m in methods:
            rs = [r for r in rows if r["dataset"] == ds and r["method"] == m]
            if not rs:
                continue
            entry = {
                "n_seeds": len(rs),
                "steps": rs[0]["steps"],
                "train_time_s": mean_std([r["train_time_s"] for r in rs])[0],
                "setup": rs[0].get("setup", "recipe"),
            }
            for key in ("modes", "hq", "kl_uniform", "intra_kl"):
                entry[key] = mean_std([r["before"][key] for r in rs])
            for s in SAMPLERS:
                entry[f"{s}_modes"] = mean_std([r["after"][s]["modes"] for r in rs])
                entry[f"{s}_hq"] = mean_std([r["after"][s]["hq"] for r in rs])
                entry[f"{s}_intra_kl"] = mean_std([r["after"][s]["intra_kl"] for r in rs])
                entry[f"{s}_failed"] = sum(1 for r in rs if r["after"][s].get("failed"))
            out[f"{ds}/{m}"] = entry
    return out


def plot_grid(path: Path, samples: dict, methods, datasets) -> None:
    """Rows: each dataset's generator samples, then the same generator after DRS (seed 0); columns: real data, then methods."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from refine.io import atomic_write

    cols = [m for m in methods if any((ds, m) in samples for ds in datasets)]
    rows = [(ds, k) for ds in datasets for k in (0, 1)]
    fig, axes = plt.subplots(len(rows), len(cols) + 1, figsize=(1.9 * (len(cols) + 1), 2.0 * len(rows)), squeeze=False)
    for r, (ds, k) in enumerate(rows):
        mixture = get_mixture(ds)
        means = np.asarray(mixture.means)
        lim = float(np.abs(means).max()) + max(0.5, 8 * mixture.std)
        real = mixture.sample(2500, rng=torch.Generator().manual_seed(7)).numpy() if k == 0 else None
        for c, (title, pts) in enumerate(
            [("real", real)] + [(m, samples[(ds, m)][k] if (ds, m) in samples else None) for m in cols]
        ):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{ds}\n{'generator' if k == 0 else 'after DRS'}", fontsize=7)
            if r == 0:
                ax.set_title(title, fontsize=8)
            if pts is None:
                for side in ax.spines.values():
                    side.set_visible(False)
                continue
            ax.scatter(
                pts[:, 0], pts[:, 1], s=0.8, alpha=0.4, color="tab:blue" if k == 0 else "tab:green", linewidths=0
            )
            ax.scatter(means[:, 0], means[:, 1], s=6, marker="x", color="tab:red", linewidths=0.6)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- stacked MNIST
def _read_idx_gz(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(root: Path) -> dict[str, torch.Tensor]:
    try:
        from refine.data.images import read_idx as reader
    except ImportError:  # the image-data module is optional here
        reader = _read_idx_gz
    out = {}
    for key, base in {
        "train_x": "train-images-idx3-ubyte",
        "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte",
        "test_y": "t10k-labels-idx1-ubyte",
    }.items():
        path = next((p for p in (root / f"{base}.gz", root / base) if p.exists()), None)
        if path is None:
            raise SystemExit(f"MNIST file {base}[.gz] not found in {root}; pass --mnist DIR")
        out[key] = torch.from_numpy(np.array(reader(path)))
    return out


class DigitNet(nn.Module):
    """A small CNN for 28x28 digits in [-1, 1] (its test accuracy is measured and reported)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 8, 5, padding=2), nn.Conv2d(8, 16, 5, padding=2)
        self.fc1, self.fc2 = nn.Linear(16 * 7 * 7, 64), nn.Linear(64, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float().div(127.5).sub(1)


def train_classifier(mnist, *, epochs: int, device, limit: int | None = None, log=print) -> tuple[nn.Module, float]:
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = DigitNet().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = mnist["train_x"], mnist["train_y"].long()
    if limit:
        x, y = x[:limit], y[:limit]
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - 127, 128):
            idx = perm[i : i + 128]
            loss = F.cross_entropy(net(to_unit(x[idx]).unsqueeze(1).to(device)), y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        pred = torch.cat(
            [
                net(to_unit(mnist["test_x"][i : i + 2000]).unsqueeze(1).to(device)).argmax(1).cpu()
                for i in range(0, 10000, 2000)
            ]
        )
    acc = float((pred == mnist["test_y"].long()).float().mean())
    log(f"MNIST classifier: {epochs} epoch(s), test accuracy {100 * acc:.2f}%")
    return net, acc


def stack_digits(mnist, n: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` stacked-MNIST images (N, 3*28*28) in [-1, 1] and their modes (0..999)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(mnist["train_x"]), (n, 3), generator=g)
    x = to_unit(mnist["train_x"][idx])  # (n, 3, 28, 28)
    y = mnist["train_y"].long()[idx]
    return x.flatten(1), y[:, 0] * 100 + y[:, 1] * 10 + y[:, 2]


@torch.no_grad()
def stacked_modes(x: torch.Tensor, clf: nn.Module) -> dict:
    x = x.view(-1, 3, 28, 28).clamp(-1, 1)
    digits = torch.stack(
        [
            torch.cat([clf(x[i : i + 2000, c : c + 1]).argmax(1).cpu() for i in range(0, len(x), 2000)])
            for c in range(3)
        ],
        1,
    )
    modes = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]
    counts = torch.bincount(modes, minlength=1000).double()
    p = counts / counts.sum()
    nz = p > 0
    return {"modes": int(nz.sum()), "kl_uniform": float((p[nz] * torch.log(p[nz] * 1000)).sum())}


def run_stacked(cfg: dict, mnist_root: Path, device, log) -> dict:
    mnist = load_mnist(mnist_root)
    clf, acc = train_classifier(
        mnist, epochs=cfg["classifier_epochs"], device=device, limit=cfg.get("classifier_limit"), log=log
    )
    data, data_modes = stack_digits(mnist, cfg["n_train"], seed=1)
    ref = stacked_modes(stack_digits(mnist, cfg["n_eval"], seed=2)[0].to(device), clf)
    log(
        f"stacked MNIST: real data through the classifier: {ref['modes']} modes, KL {ref['kl_uniform']:.3f} ({cfg['n_eval']} samples)"
    )
    x_dim, rows, pictures = data.shape[1], [], {}
    for method in cfg["methods"]:
        cls = get_method(method)
        opts = {"lr": 2e-4, "betas": (0.5, 0.999), **cfg["options"].get(method, {})}
        check_method_options(cls, opts)
        for seed in range(cfg["seeds"]):
            g_arch = arch_config(
                "mlp",
                in_dim=cfg["latent_dim"],
                out_dim=x_dim,
                hidden=cfg["hidden"],
                depth=cfg["depth"],
                activation="leaky_relu",
            )
            archs = method_networks(
                cls, x_dim=x_dim, z_dim=cfg["latent_dim"], hidden=cfg["hidden"], depth=cfg["depth"], options=opts
            )
            archs = {k: {**a, "kwargs": {**a["kwargs"], "activation": "leaky_relu"}} for k, a in archs.items()}
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                gnet = build_from_config(g_arch).to(device)
                nets = {k: build_from_config(a).to(device) for k, a in archs.items()}
            G = LatentGenerator(gnet, NormalPrior((cfg["latent_dim"],)), output_range="[-1,1]")
            trainer = cls(G, nets.pop("discriminator", None), **nets, **opts)
            epochs = max(1, round(cfg["steps"] * cfg["batch_size"] / cfg["n_train"]))
            t0 = time.perf_counter()
            fit(
                trainer,
                data.to(device),
                epochs=epochs,
                batch_size=cfg["batch_size"],
                rng=torch.Generator().manual_seed(seed),
                device=device,
            )
            train_s = time.perf_counter() - t0
            gnet.eval().requires_grad_(False)
            _, x = G.sample(cfg["n_eval"], rng=torch.Generator().manual_seed(seed + 500))
            before = stacked_modes(x, clf)
            D = trainer.D if getattr(trainer, "D", None) is not None and method not in ("veegan",) else None
            ratio, _ = fitted_ratio(
                G, D, data.to(device), hidden=cfg["hidden"], depth=cfg["depth"], epochs=2, seed=seed
            )
            res = get_sampler("drs").sample(
                LatentTarget(G, ratio), cfg["n_eval"], rng=torch.Generator().manual_seed(seed + 1000)
            )
            after = stacked_modes(res.x, clf)
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "steps": epochs * (cfg["n_train"] // cfg["batch_size"]),
                    "train_time_s": train_s,
                    "before": before,
                    "after_drs": after,
                }
            )
            if seed == 0:
                pictures[method] = x[:32].view(-1, 3, 28, 28).cpu()
            log(
                f"stacked MNIST {method:9s} seed {seed}: {train_s:5.1f}s | modes {before['modes']} KL {before['kl_uniform']:.3f} | "
                f"after drs: modes {after['modes']} KL {after['kl_uniform']:.3f}"
            )
    return {"config": cfg, "classifier_test_accuracy": acc, "real_data": ref, "rows": rows, "pictures": pictures}


def save_stacked_picture(path: Path, pictures: dict) -> None:
    from PIL import Image

    from refine.io import atomic_write
    from refine.plot import image_grid

    if not pictures:
        return
    tiles = [image_grid(x, output_range="[-1,1]", nrow=8) for x in pictures.values()]
    h = sum(t.shape[0] for t in tiles) + 4 * len(tiles)
    canvas = np.full((h, max(t.shape[1] for t in tiles), 3), 255, np.uint8)
    y = 0
    for t in tiles:
        canvas[y : y + t.shape[0], : t.shape[1]] = t
        y += t.shape[0] + 4
    with atomic_write(path) as f:
        Image.fromarray(canvas).save(f, format="PNG")


# --------------------------------------------------------------------------- report
def atomic_text(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def markdown(result: dict) -> str:
    lines = [
        f"# Mode-collapse benchmark ({result['config_name']})",
        "",
        f"Machine: {result['machine']}. Date: {result['date']}. Command: `{result['command']}`. Total time {result['total_time_s'] / 60:.1f} min.",
        "",
    ]
    cfg = result.get("config_2d")
    if cfg:
        lines += [
            f"2-D mixtures: {cfg['seeds']} seeds (mean ± std; seeds 0, 1, 2 for every method), {cfg['n_eval']} samples per evaluation, "
            "HQ = within 3 std of the nearest mean, modes = modes with at least one HQ sample.",
            "",
        ]
        paper = result.get("config_paper")
        if paper:
            lines += [
                "Rows marked **paper** follow the papers' own 2-D setups (the sources are cited in `PAPER_2D` in the script), "
                f"{paper['steps']} steps each, MLPs {paper['hidden']} x {paper['depth']} hidden:",
                "",
            ]
            for m, p in paper["per_method"].items():
                opts = ", ".join(
                    f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in p["options"].items()
                )
                lines.append(f"- {m}: latent {p['latent_dim']}, batch {p['batch_size']}, {p['activation']}, {opts}")
            lines += [
                "",
                "Probes before the full run (one seed, every variant tried; `python benchmarks/mode_collapse.py` with):",
                "",
            ]
            lines += [f"- `{cmd}`: {what}" for cmd, what in PROBES]
            lines += [
                "",
                "Pictures (seed 0): this run's rows in `mode_collapse.png`, the recipe run's in `mode_collapse_recipe.png`.",
            ]
            lines += [
                "",
                "Rows marked **recipe** are kept from the earlier run of the shared recipe (`--config cpu`, "
                "results also in `mode_collapse_recipe.md`): ",
            ]
        lines[-1] += (
            f"MLPs {cfg['hidden']} x {cfg['depth']} hidden, latent {cfg['latent_dim']}, "
            f"batch {cfg['batch_size']}, Adam lr 1e-3 betas (0.5, 0.999), {cfg['steps']} steps ({cfg['expensive_steps']} for {', '.join(sorted(EXPENSIVE))}). "
            "Method options: "
            + "; ".join(f"{m} " + ", ".join(f"{k}={v:g}" for k, v in o.items()) for m, o in METHOD_OPTIONS.items())
            + ". "
        )
        lines += [
            "",
            f"Refinement: the discriminator refitted to the final generator for {cfg['refit_epochs']} epochs (a fresh MLP for methods without one), "
            f"then rs, drs (gamma 80), mh (k 100), sir (20 candidates). "
            + "".join(
                f"{d} is run for {', '.join(ms)} only. " for d, ms in DATASET_METHODS.items() if d in result["datasets"]
            ),
            "",
        ]
        for ds in result["datasets"]:
            lines += [
                f"## {ds}",
                "",
                "| method | setup | steps | modes | HQ % | KL(modes ‖ uniform) | intra-mode KL | HQ % rs | HQ % drs | HQ % mh | HQ % sir | modes drs | modes mh | paper (modes / HQ %) |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for m in result["methods"]:
                e = result["summary_2d"].get(f"{ds}/{m}")
                if e is None:
                    continue

                def f(k, fmt="{:.1f}"):
                    txt = "–" if math.isnan(e[k][0]) else (fmt + " ± " + fmt).format(*e[k])
                    failed = e.get(k.split("_")[0] + "_failed", 0) if k.split("_")[0] in SAMPLERS else 0
                    return txt + (f" ({failed} of {e['n_seeds']} over budget)" if failed else "")

                ref = REFERENCE.get(ds, {}).get(m)
                lines.append(
                    f"| {m} | {e.get('setup', 'recipe')} | {e['steps']} | {f('modes')} | {f('hq')} | {f('kl_uniform', '{:.2f}')} | {f('intra_kl', '{:.2f}')} | {f('rs_hq')} | "
                    f"{f('drs_hq')} | {f('mh_hq')} | {f('sir_hq')} | {f('drs_modes')} | {f('mh_modes')} | {'%g / %g' % ref if ref else '–'} |"
                )
            lines.append("")
    st = result.get("stacked")
    if st:
        c = st["config"]
        lines += [
            "## Stacked MNIST",
            "",
            f"{c['n_train']} training images (three random MNIST digits as channels), MLP G/D {c['hidden']} x {c['depth']} hidden (leaky ReLU), "
            f"latent {c['latent_dim']}, batch {c['batch_size']}, Adam 2e-4; {c['n_eval']} samples scored by an MNIST CNN trained here "
            f"(test accuracy {100 * st['classifier_test_accuracy']:.2f}%). Real stacked data scores {st['real_data']['modes']} modes, "
            f"KL {st['real_data']['kl_uniform']:.3f} at this sample size.",
            "",
            "| method | steps | seeds | modes | KL | modes after drs | KL after drs | paper (modes / KL) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for m in c["methods"]:
            rs = [r for r in st["rows"] if r["method"] == m]
            ref = REFERENCE["stacked-mnist"].get(m)
            lines.append(
                f"| {m} | {rs[0]['steps']} | {len(rs)} | {pm([r['before']['modes'] for r in rs])} | {pm([r['before']['kl_uniform'] for r in rs], '{:.2f}')} | "
                f"{pm([r['after_drs']['modes'] for r in rs])} | {pm([r['after_drs']['kl_uniform'] for r in rs], '{:.2f}')} | {'%g / %g' % ref if ref else '–'} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: one seed, a few steps (same as --config quick)")
    ap.add_argument(
        "--config",
        choices=list(CONFIGS),
        default="cpu",
        help="2-D configuration: cpu (default: one recipe for every method), paper (GAN, Unrolled, VEEGAN in their papers' setups), "
        "long (VEEGAN, 5x the steps), quick",
    )
    ap.add_argument("--part", choices=["all", "2d", "stacked"], default="all")
    ap.add_argument(
        "--stacked",
        choices=list(STACKED),
        default=None,
        help="stacked-MNIST configuration (default: small, quick with --quick)",
    )
    ap.add_argument(
        "--methods",
        default=None,
        help="comma-separated 2-D methods (default: all registered of " + ",".join(METHODS) + ")",
    )
    ap.add_argument("--datasets", default=None, help="comma-separated 2-D datasets")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="override the configuration's steps (probes)")
    ap.add_argument(
        "--variant",
        choices=list(PAPER_VARIANTS),
        default=None,
        help="with --config paper: a variant's options for its method (probes)",
    )
    ap.add_argument(
        "--render", type=Path, default=None, help="only rewrite the markdown next to this result JSON (no training)"
    )
    ap.add_argument(
        "--merge",
        type=Path,
        default=None,
        help="an earlier result JSON: its 2-D rows for (dataset, method) pairs not run now, and its stacked-MNIST section, are kept",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--mnist", type=Path, default=None, help="folder with the MNIST idx files")
    ap.add_argument(
        "--out", type=Path, default=None, help="output prefix (default benchmarks/results/mode_collapse[_quick])"
    )
    args = ap.parse_args(argv)
    if args.render is not None:
        result = json.loads(args.render.read_text())
        atomic_text(args.render.with_suffix(".md"), markdown(result))
        print(f"wrote {args.render.with_suffix('.md')}")
        return 0
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = "quick" if args.quick else args.config
    cfg = dict(CONFIGS[name])
    if args.seeds:
        cfg["seeds"] = args.seeds
    if args.steps:
        cfg["steps"] = args.steps
    if args.variant:
        if "per_method" not in cfg:
            raise SystemExit("--variant needs --config paper")
        vm, vopts = PAPER_VARIANTS[args.variant]
        cfg["per_method"] = {**cfg["per_method"], vm: {**cfg["per_method"][vm], "options": vopts}}
        cfg["variant"] = args.variant
    methods = [m for m in (args.methods.split(",") if args.methods else cfg["methods"]) if m in list_methods()]
    datasets = args.datasets.split(",") if args.datasets else cfg["datasets"]
    out = args.out or RESULTS / {"paper": "mode_collapse", "cpu": "mode_collapse_recipe"}.get(
        name, f"mode_collapse_{name}"
    )
    merged = json.loads(args.merge.read_text()) if args.merge else None
    out.parent.mkdir(parents=True, exist_ok=True)
    shared = Path(os.environ.get("REFINE_SHARED", ROOT.parent / "shared"))
    mnist_root = args.mnist or shared / "data" / "mnist"
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    result = {
        "config_name": name,
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "command": "python " + " ".join(["benchmarks/mode_collapse.py", *(argv if argv is not None else sys.argv[1:])]),
        "methods": methods,
        "datasets": datasets,
        "samplers": SAMPLERS,
        "method_options": METHOD_OPTIONS,
        "reference": REFERENCE,
    }
    if args.part in ("all", "2d"):
        log(f"2-D: {', '.join(methods)} on {', '.join(datasets)}, {cfg['seeds']} seed(s)")
        rows, samples = run_2d(cfg, methods, datasets, device, log)
        run_methods, run_datasets = methods, datasets
        if merged is not None and merged.get("runs_2d"):
            done = {(r["dataset"], r["method"]) for r in rows}
            rows = rows + [
                {**r, "setup": r.get("setup", "recipe")}
                for r in merged["runs_2d"]
                if (r["dataset"], r["method"]) not in done
            ]
            methods = [m for m in merged["methods"] if m in {r["method"] for r in rows}] + [
                m for m in methods if m not in merged["methods"]
            ]
            datasets = [d for d in merged["datasets"] if d in {r["dataset"] for r in rows}] + [
                d for d in datasets if d not in merged["datasets"]
            ]
            result.update(
                {
                    "methods": methods,
                    "datasets": datasets,
                    "config_2d": merged["config_2d"],
                    "config_paper": cfg,
                    "merged_from": str(args.merge),
                }
            )
        else:
            result["config_2d"] = cfg
        result.update({"runs_2d": rows, "summary_2d": summarise_2d(rows, methods, datasets)})
        plot_grid(out.with_suffix(".png"), samples, run_methods, run_datasets)  # pictures of this run's rows only
    if args.part in ("all", "stacked"):
        scfg = STACKED[args.stacked or ("quick" if name == "quick" else "small")]
        if mnist_root.is_dir():
            st = run_stacked(scfg, mnist_root, device, log)
            save_stacked_picture(out.parent / (out.name + "_stacked.png"), st.pop("pictures"))
            result["stacked"] = st
        else:
            log(f"stacked MNIST skipped: {mnist_root} not found (pass --mnist)")
    elif merged is not None and merged.get("stacked"):
        result["stacked"] = merged["stacked"]
    result["total_time_s"] = time.perf_counter() - t_start
    write_json(result, out.with_suffix(".json"))
    atomic_text(out.with_suffix(".md"), markdown(result))
    log(f"wrote {out}.md, .json, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
