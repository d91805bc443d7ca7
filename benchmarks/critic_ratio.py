"""From a WGAN critic to a density ratio without a hand-set temperature.

    python benchmarks/critic_ratio.py [--pairs foreign,trained] [-n 5000] [--seeds 1] [--quick]

A WGAN critic is not a log density ratio. Three ways to get one from data, each run with the
proposal samplers (rs exact, rs at its default bound and rs at the 99th percentile, then drs, mh
and sir at their defaults; then, with the fine-tuned ratio, exact rs with 20,000 proposals per
sample allowed instead of 1,000):

- ``critic, logistic``: ``log r = a * critic + b``, fitted by logistic regression on held-out real
  vs generated critic values (MH-GAN's calibration; the scale comes from data).
- ``critic, isotonic``: the best non-decreasing map of the critic value (isotonic regression). No
  monotone calibration of this critic can separate real from generated samples better (held-out
  log loss), so it bounds what any temperature or calibration of the critic can reach.
- ``fine-tuned``: DRS's protocol: a copy of the critic trained on with the logistic loss against
  the fixed generator (early stopping on a held-out loss, capped), then logistic calibration.

Pairs: ``foreign``, the third-party WGAN pair in ../shared/weights/gan/toy2d (25 Gaussians, WGAN-GP
convention); ``trained``, the WGAN-GP that benchmarks/toy2d_gradient.py trains with refine's
wgan-gp. Quality: fraction of samples within 3 std of a mode (HQ), modes hit, KL of the mode
histogram to uniform; the aim is the low-quality fraction (1 - HQ) at least halved with every
mode kept. Writes benchmarks/results/critic_ratio.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, mean_std, ran_options, today, write_results  # noqa: E402

from refine.data.toy2d import get_mixture  # noqa: E402
from refine.generator import LatentGenerator, NormalPrior  # noqa: E402
from refine.metrics.toy2d import mode_metrics  # noqa: E402
from refine.nets import build  # noqa: E402
from refine.ratio import DiscriminatorRatio  # noqa: E402
from refine.ratio.calibration import calibrate  # noqa: E402
from refine.samplers import get_sampler  # noqa: E402
from refine.samplers.rejection import acceptance_rate  # noqa: E402
from refine.target import LatentTarget  # noqa: E402
from refine.train.gan import (  # noqa: E402
    REFIT_LR,
    REFIT_MAX_EPOCHS,
    REFIT_MIN_DELTA,
    REFIT_PATIENCE,
    fit_discriminator,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
WGAN_DIR = SHARED / "weights" / "gan" / "toy2d"
THRESHOLD = 3.0
N_CAL = 10_000
#: the fine-tuning protocol (the same for every pair): logistic loss, Adam 1e-4, early stopping
FINETUNE = {"epochs": 100, "patience": 3, "lr": 1e-4, "batch_size": 512, "n_train": 50_000, "n_val": 10_000}
#: ``--refit-defaults``: what ``refine fit-ratio --disc D --calibration logistic`` does with no other flag
REFIT_DEFAULTS = {
    "epochs": REFIT_MAX_EPOCHS,
    "patience": REFIT_PATIENCE,
    "lr": REFIT_LR,
    "min_delta": REFIT_MIN_DELTA,
    "batch_size": 512,
    "n_train": 50_000,
    "n_val": 5_000,
}
#: exact rs, rs at its default bound (exact while it fits the budget, else capped), rs capped at the 99th
#: percentile, the other proposal samplers at their defaults, then exact rs with 20 times the default budget:
#: (method, options, the ratios it runs with: None for all); the large budget only where the aim is in reach
EXACT = {"m_quantile": 1.0}
SAMPLERS = [
    ("rs", EXACT, None),
    ("rs", {}, None),
    ("rs", {"m_quantile": 0.99}, None),
    ("drs", {}, None),
    ("mh", {}, None),
    ("sir", {}, None),
    ("rs", {**EXACT, "budget": 20_000}, ("fine-tuned, logistic",)),
]
#: what rs's default bound chose in a run, kept in its row
BOUND_KEYS = ("bound_quantile", "capped_mass", "bound_switched_after", "accepted_exact")
#: generator samples counted near each mode for the cost floor of exact rs, the disc's radius (in std)
FLOOR_N, FLOOR_RADIUS = 16_000_000, 1.0
#: one-sided level of the upper confidence bound on a generator's mass in a disc (4 standard deviations)
FLOOR_ALPHA = 3.17e-5
#: proposals scored to measure what exact rs costs with a fitted ratio
COST_N = 1_000_000


def foreign_pair():
    g = build("mlp", in_dim=2, out_dim=2, hidden=256, depth=3)
    d = build("mlp", in_dim=2, out_dim=1, hidden=512, depth=3)
    g.load_state_dict(torch.load(WGAN_DIR / "ddls_wgan_25Gauss_G_5000eps_state_dict.pt", weights_only=True))
    d.load_state_dict(torch.load(WGAN_DIR / "ddls_wgan_25Gauss_D_5000eps_state_dict.pt", weights_only=True))
    return LatentGenerator(g.eval().requires_grad_(False), NormalPrior((2,))), d.eval().requires_grad_(False), None


def trained_pair(quick: bool):
    from toy2d_gradient import train_wgan_gp

    gen, critic, record = train_wgan_gp(quick)
    return gen, critic, record


def ratios(gen, critic, mix, seed: int, ft: dict) -> list[tuple[str, object, dict]]:
    rng = torch.Generator().manual_seed(1000 + seed)
    real, fake = mix.sample(N_CAL, rng=rng), gen.sample(N_CAL, rng=rng)[1]
    out = []
    for how in ("logistic", "isotonic"):
        t0 = time.perf_counter()
        r, rep = calibrate(DiscriminatorRatio(critic, "critic"), real, fake, how, rng=rng)
        out.append((f"critic, {how}", r, {"calibration": rep, "fit_time_s": time.perf_counter() - t0}))
    d = copy.deepcopy(critic)
    t0 = time.perf_counter()
    hist = fit_discriminator(
        gen,
        d,
        mix.sample(ft["n_train"], rng=rng),
        epochs=ft["epochs"],
        batch_size=ft["batch_size"],
        lr=ft["lr"],
        val=mix.sample(ft["n_val"], rng=rng),
        patience=ft["patience"],
        min_delta=ft.get("min_delta", 0.0),
        rng=rng,
    )
    d.eval().requires_grad_(False)
    fit_time = time.perf_counter() - t0
    r, rep = calibrate(DiscriminatorRatio(d, "logit"), real, fake, "logistic", rng=rng)
    extra = {"calibration": rep, "fit_time_s": fit_time, "epochs": len(hist), "best_epoch": hist[-1].get("best_epoch")}
    extra["val_loss"] = [round(h["val_loss"], 4) for h in hist]
    out.append(("fine-tuned, logistic", r, extra))
    return out


def exact_rs_floor(gen, mix, n: int = FLOOR_N, seed: int = 0) -> dict:
    """A lower bound on the proposals per sample that exact rs from ``gen`` to the data needs.

    Exact rejection sampling from p_G to p_data accepts 1/M of its proposals, M = sup p_data / p_G, and
    M >= P_data(A) / P_G(A) for any set A. A: the disc of radius FLOOR_RADIUS std around one mode.
    P_data(A) is known (the mode's weight times 1 - exp(-radius^2 / 2)); P_G(A) is bounded above from
    ``n`` generator samples by the exact Poisson upper confidence bound at level FLOOR_ALPHA. The
    largest of these ratios over the modes bounds M, and so the cost, from below. It holds for any
    ratio close to the true one; a fitted ratio that is smoother than the truth can cost less.
    """
    from scipy.stats import chi2

    means = mix.means_tensor()
    counts = torch.zeros(len(means), dtype=torch.long)
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for start in range(0, n, 1_000_000):
            x = gen.sample(min(1_000_000, n - start), rng=rng)[1]
            dist, nearest = torch.cdist(x, means).min(1)
            near = dist < FLOOR_RADIUS * mix.std
            counts += torch.bincount(nearest[near], minlength=len(means))
    p_data = (1 - math.exp(-(FLOOR_RADIUS**2) / 2)) / len(means)
    upper = [float(chi2.ppf(1 - FLOOR_ALPHA, 2 * c + 2)) / 2 / n for c in counts.tolist()]
    bounds = [p_data / u for u in upper]
    j = max(range(len(bounds)), key=bounds.__getitem__)
    return {
        "n": n,
        "radius_std": FLOOR_RADIUS,
        "alpha": FLOOR_ALPHA,
        "counts": counts.tolist(),
        "p_data_disc": p_data,
        "mode": j,
        "g_mass_upper": upper[j],
        "bound": bounds[j],
    }


def exact_cost(gen, ratio, seed: int) -> float:
    """What exact rs costs with ``ratio``: M / E_G[r], M the largest r over COST_N proposals.

    1 / (acceptance rate); the maximum only grows with more proposals, so this is a lower estimate.
    """
    rng = torch.Generator().manual_seed(2000 + seed)
    with torch.no_grad():
        lw = torch.cat([ratio.log_ratio(gen.sample(100_000, rng=rng)[1]) for _ in range(COST_N // 100_000)])
    return 1.0 / acceptance_rate(lw)


def run_pair(
    name: str, n: int, seeds: int, quick: bool, finetune: dict, samplers=SAMPLERS, only: str | None = None
) -> dict:
    mix = get_mixture("grid25-wgan")
    gen, critic, training = foreign_pair() if name == "foreign" else trained_pair(quick)
    rows = []
    for seed in range(seeds):
        x_raw = gen.sample(n, rng=torch.Generator().manual_seed(seed))[1]
        raw = mode_metrics(x_raw, mix, threshold=THRESHOLD)
        rows.append(
            {"seed": seed, "ratio": "–", "method": "none", "options": {}, **_m(raw), "passes": 1.0, "lq_factor": 1.0}
        )
        for label, ratio, extra in ratios(gen, critic, mix, seed, finetune):
            if only is not None and label != only:
                continue
            target = LatentTarget(gen, ratio)
            extra["exact_cost"] = exact_cost(gen, ratio, seed)
            cal = extra["calibration"]["after"]
            for method, opts, only_with in samplers:
                if only_with is not None and label not in only_with:
                    continue
                t0 = time.perf_counter()
                row = {"seed": seed, "ratio": label, "method": method, "options": opts}
                if method == "rs" and "m_quantile" not in opts:
                    row["default_bound"] = "auto"  # rows without it ran when rs's default bound was exact
                row.update(log_loss=cal["log_loss"], z=cal["z"], brier=cal["brier"], ece=cal["ece"])
                row.update({k: extra[k] for k in ("fit_time_s", "epochs", "best_epoch", "exact_cost") if k in extra})
                try:
                    res = get_sampler(method, **opts).sample(target, n, rng=torch.Generator().manual_seed(seed))
                    row.update(_m(mode_metrics(res.x, mix, threshold=THRESHOLD)), passes=_passes(res.info))
                    row.update({k: res.info.extras[k] for k in BOUND_KEYS if k in res.info.extras})
                except Exception as e:  # a rejection sampler over its budget is a result, not a crash
                    row.update(error=str(e).split(";")[0][:200])
                row["time_s"] = time.perf_counter() - t0
                row["rss_mb"] = _rss_mb()
                row["lq_factor"] = (
                    (1 - raw["hq_fraction"]) / max(1 - row["hq_fraction"], 1e-9) if "hq_fraction" in row else None
                )
                print(f"[{name} seed {seed}] {label:22s} {method} {opts}: {_show(row)}", flush=True)
                rows.append(row)
    floor = exact_rs_floor(gen, mix, FLOOR_N // 16 if quick else FLOOR_N)
    print(f"[{name}] exact rs needs at least {floor['bound']:.3g} proposals per sample with the true ratio", flush=True)
    return {"pair": name, "n": n, "seeds": seeds, "training": training, "rows": rows, "exact_rs_floor": floor}


def _rss_mb() -> float | None:
    """This process's resident memory (Linux), recorded after each row."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20
    except (OSError, IndexError, ValueError):
        return None


def _passes(info) -> float:
    d = info if isinstance(info, dict) else info.to_dict()
    return float(d.get("g_evals_per_sample", float("nan")))


def _m(mm: dict) -> dict:
    return {"hq_fraction": mm["hq_fraction"], "modes": mm["modes"], "kl_uniform": mm["kl_uniform"]}


def _show(row: dict) -> str:
    if "error" in row:
        return "refused: " + row["error"]
    return f"HQ {row['hq_fraction']:.3f} modes {row['modes']} KL {row['kl_uniform']:.3f} LQ/{row['lq_factor']:.2f} ({row['passes']:.1f} passes)"


def summary(pairs: list[dict]) -> list[dict]:
    """Mean over seeds per (pair, ratio, method, options)."""
    out = []
    for p in pairs:
        p = {**p, "rows": [{**r, "options": ran_options(r)} for r in p["rows"]]}
        keys = []
        for r in p["rows"]:
            k = (r["ratio"], r["method"], json.dumps(r["options"], sort_keys=True))
            if k not in keys:
                keys.append(k)
        raw_modes = {r["seed"]: r["modes"] for r in p["rows"] if r["method"] == "none"}
        for ratio, method, opts in keys:
            rs = [
                r
                for r in p["rows"]
                if (r["ratio"], r["method"], json.dumps(r["options"], sort_keys=True)) == (ratio, method, opts)
            ]
            ok = [r for r in rs if "error" not in r]
            row = {
                "pair": p["pair"],
                "ratio": ratio,
                "method": method,
                "options": json.loads(opts),
                "runs": len(rs),
                "ok": len(ok),
            }
            per_ratio = ("log_loss", "fit_time_s", "exact_cost")
            for k in ("hq_fraction", "modes", "kl_uniform", "lq_factor", "passes", *per_ratio):
                vals = [r.get(k) for r in ok] if k not in per_ratio else [r.get(k) for r in rs]
                row[k] = mean_std(vals)[0] if any(v is not None for v in vals) else None
            if not ok:
                row["error"] = rs[0].get("error")
            row["min_modes"] = min((r["modes"] for r in ok), default=None)
            # a mode lost: fewer modes than the raw generator hit with the same seed (its own count varies at small n)
            row["runs_losing_modes"] = sum(1 for r in ok if r["modes"] < raw_modes[r["seed"]])
            row["min_lq_factor"] = min((r["lq_factor"] for r in ok), default=None)
            capped = [r for r in ok if r.get("bound_quantile", 1.0) < 1.0]
            if method == "rs" and not row["options"] and capped:  # the default bound: the caps it chose
                row["capped_runs"] = len(capped)
                row["caps"] = sorted({r["bound_quantile"] for r in capped})
                row["max_capped_mass"] = max(r["capped_mass"] for r in capped)
            out.append(row)
    return out


def method_label(method: str, opts: dict) -> str:
    """``rs m_quantile 0.99``; rs with no options: ``rs (default bound)``."""
    if method == "rs" and not opts:
        return "rs (default bound)"
    return method + (" " + ", ".join(f"{k} {v}" for k, v in opts.items()) if opts else "")


def aim_met(r: dict) -> bool:
    """The aim, for a summary row: every run finished, the low-quality fraction at least halved on the mean, no mode lost."""
    return r["ok"] == r["runs"] and r["lq_factor"] >= 2 and r.get("runs_losing_modes", 0) == 0


def table(rows: list[dict], pair: str) -> str:
    lines = [
        "| ratio | method | HQ | modes (min) | KL | LQ raw / LQ (min) | passes / sample | held-out log loss | aim |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["pair"] != pair:
            continue
        meth = method_label(r["method"], r["options"])
        if r.get("capped_runs"):
            meth += (
                f": capped in {r['capped_runs']} of {r['ok']} runs at the {'/'.join(map(str, r['caps']))} quantile, "
                f"capped mass up to {r['max_capped_mass']:.2f}"
            )
        ll = "–" if r["log_loss"] is None else f"{r['log_loss']:.3f}"
        if r.get("error"):
            lines.append(f"| {r['ratio']} | {meth} | refused: {r['error']} | | | | | {ll} | no |")
            continue
        if r["ok"] < r["runs"]:  # means over the runs that finished; the others were refused
            meth += f" ({r['ok']} of {r['runs']} runs; the others refused)"
        lost = r.get("runs_losing_modes", 0)
        aim = "–" if r["method"] == "none" else ("yes" if aim_met(r) else "no")
        if lost:
            aim += f" (modes lost in {lost} of {r['ok']} runs)"
        lo = r.get("min_lq_factor", r["lq_factor"])
        lines.append(
            f"| {r['ratio']} | {meth} | {r['hq_fraction']:.3f} | {r['modes']:.1f} ({r['min_modes']}) | {r['kl_uniform']:.3f} | "
            f"{r['lq_factor']:.2f} ({lo:.2f}) | {r['passes']:.1f} | {ll} | {aim} |"
        )
    return "\n".join(lines)


def compare_table(records: dict[str, dict], ratio: str = "fine-tuned, logistic") -> str:
    """LQ raw / LQ (the smallest over the seeds) and the aim for ``ratio`` under each fine-tuning protocol:
    ``records`` maps a column label to a results record (its ``summary`` from :func:`summary`)."""
    labels = list(records)
    lines = [
        "| pair | method | " + " | ".join(f"{label}: LQ raw / LQ (min), aim" for label in labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    first = next(iter(records.values()))
    for p in first["pairs"]:
        keys = [(r["method"], r["options"]) for r in first["summary"] if r["pair"] == p["pair"] and r["ratio"] == ratio]
        for method, opts in keys:
            cells = []
            for rec in records.values():
                r = next(
                    r
                    for r in rec["summary"]
                    if (r["pair"], r["ratio"], r["method"], r["options"]) == (p["pair"], ratio, method, opts)
                )
                if r["ok"] < r["runs"]:
                    cells.append(f"refused in {r['runs'] - r['ok']} of {r['runs']} runs")
                    continue
                cells.append(f"{r['lq_factor']:.2f} ({r['min_lq_factor']:.2f}), {'yes' if aim_met(r) else 'no'}")
            lines.append(f"| {p['pair']} | {method_label(method, opts)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(record: dict) -> str:
    """What exact rs costs: the floor for the true ratio and M / E_G[r] for each fitted one."""
    labels = [r["ratio"] for r in record["summary"] if r["method"] == "rs" and r["options"] == EXACT]
    labels = list(dict.fromkeys(labels))
    lines = [
        "| pair | generator mass within 1 std of its least-reached mode | true ratio: at least | "
        + " | ".join(f"{label}: M / E_G[r]" for label in labels)
        + f" | {labels[-1]}: runs refused at budget 1,000 / 20,000 |",
        "|---|---|---|" + "---|" * len(labels) + "---|",
    ]
    for p in record["pairs"]:
        f = p["exact_rs_floor"]
        cells = []
        for label in labels:
            r = next(r for r in record["summary"] if r["pair"] == p["pair"] and r["ratio"] == label)
            cells.append(f"{r['exact_cost']:,.0f}")
        refused = []
        for budget in (EXACT, {**EXACT, "budget": 20_000}):
            r = next(
                (
                    r
                    for r in record["summary"]
                    if r["pair"] == p["pair"]
                    and r["ratio"] == labels[-1]
                    and r["method"] == "rs"
                    and r["options"] == budget
                ),
                None,
            )
            refused.append("–" if r is None else f"{r['runs'] - r['ok']} of {r['runs']}")  # – : not run
        lines.append(
            f"| {p['pair']} | < {f['g_mass_upper']:.2g} ({sum(f['counts']) / f['n']:.3f} near all 25) | "
            f"{f['bound']:,.0f} | " + " | ".join(cells) + f" | {' / '.join(refused)} |"
        )
    return "\n".join(lines)


def render(record: dict) -> str:
    parts = [
        "# From a critic to a ratio",
        "",
        f"Generated by `python benchmarks/critic_ratio.py` on {record['date']}. Machine: {record['machine']}.",
        f"n = {record['n']} samples per run, {record['seeds']} seed(s); HQ = within {THRESHOLD:g} std of a mode.",
        f"Calibration on {record['n_calibration']} held-out real and generated samples; fine-tuning: {record['finetune']}.",
        "Aim: LQ raw / LQ >= 2 (the low-quality fraction at least halved; mean over the seeds, the smallest in brackets) "
        "with no mode lost, in every run.",
    ]
    for p in record["pairs"]:
        parts += ["", f"## {p['pair']} pair", "", table(record["summary"], p["pair"])]
    has_defaults = any(r["method"] == "rs" and r["options"] == EXACT for r in record["summary"])
    if has_defaults and all("exact_rs_floor" in p for p in record["pairs"]):
        parts += ["", "## What exact rs costs (proposals per sample)", "", cost_table(record)]
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="foreign,trained")
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 fine-tuning epochs, n 500")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the protocol's)")
    ap.add_argument(
        "--refit-defaults",
        action="store_true",
        help="fine-tune as `refine fit-ratio` does with no flags (REFIT_DEFAULTS) instead of FINETUNE",
    )
    ap.add_argument(
        "--finetune",
        type=json.loads,
        default=None,
        help='JSON entries that replace the protocol\'s, e.g. \'{"epochs": 10, "patience": null, "lr": 0.001}\'',
    )
    ap.add_argument("--name", default="critic_ratio", help="results file stem")
    ap.add_argument("--ratio", default=None, help="run this ratio only (e.g. 'fine-tuned, logistic')")
    ap.add_argument(
        "--samplers",
        type=json.loads,
        default=None,
        help="JSON list of [method, options] pairs instead of the default set",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    finetune = dict(REFIT_DEFAULTS if args.refit_defaults else FINETUNE)
    finetune.update(args.finetune or {})
    finetune.update({"lr": float(args.lr)} if args.lr is not None else {}, **({"epochs": 2} if args.quick else {}))
    n = 500 if args.quick else args.n
    samplers = [(m, o, None) for m, o in args.samplers] if args.samplers else SAMPLERS
    pairs = [run_pair(p, n, args.seeds, args.quick, finetune, samplers, args.ratio) for p in args.pairs.split(",")]
    record = {
        "command": shlex.join(["python", "benchmarks/critic_ratio.py", *sys.argv[1:]]),
        "date": today(),
        "machine": machine() + ", torch on 1 thread",
        "n": n,
        "seeds": args.seeds,
        "n_calibration": N_CAL,
        "finetune": finetune,
        "pairs": pairs,
    }
    record["summary"] = summary(pairs)
    stem = args.name + ("_quick" if args.quick else "")
    write_results(stem, record, render(record), args.out)


if __name__ == "__main__":
    main()
