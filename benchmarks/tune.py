"""refine tune on the 2-D pairs and the shipped MNIST pair, against the hand-set rows of the README's tables.

    python benchmarks/tune.py [--pair shipped|trained|mnist|all] [--quick] [--mnist ../shared/data/mnist]

Writes benchmarks/results/tune.{md,json} and tune_<pair>.png (the quality-versus-cost front).

- ``shipped``: the shipped 25-Gaussian GAN and its fitted ratio, every method, a budget of
  20 passes per output sample, final n 10,000 (the n of benchmarks/toy2d.py). The hand-set
  rows it is compared with are those of benchmarks/results/toy2d.json that cost at most
  20 G evaluations per sample, scored with the same objective (HQ fraction x
  exp(-KL(modes || uniform)), from their mean HQ and KL over 3 seeds).
- ``trained``: the WGAN-GP that benchmarks/toy2d_gradient.py trains with refine's wgan-gp
  (same recipe and seed), its critic read as ``critic / T``. No calibrated critic ratio
  exists in refine yet, so the critic's temperature T is one of the searched knobs (1e-3..1,
  log-uniform) rather than hand-given; the gradient methods only, with a budget of 603
  passes per sample (what the README's 200-step DDLS row costs), n 2,000 and HQ within 3 std
  as in that benchmark. A setting "works" when it halves the raw low-quality fraction and
  keeps every mode (the verdict of benchmarks/toy2d_gradient.py).
- ``mnist``: the shipped MNIST DCGAN with its DRE-F-SP ratio (budget 20 passes per sample, and
  89, what the README's best row, exact rs, costs: rs and mh only) and with its refitted
  discriminator ratio (budget 20). Proposal methods only (rs, drs, sir, mh): a gradient method
  backpropagates through the ResNet-34 DRE-F-SP for every step of every sample, too slow for a
  27-trial search on this CPU. Trials are scored by FID in the feature space of
  benchmarks/mnist.py, the small CNN trained there (cached in benchmarks/_work/mnist), not the
  ratio's own; validation = 10,000 MNIST training images, test = the 10,000 test images, final
  n 1,000 (``--n``; the README's 2,000 does not fit a 40-minute run on a shared 2-core CPU). The
  README's hand-set rows are rescored in the same run, same space, n, test split and seed as
  benchmarks/mnist.py (seed 0), and the raw generator with seeds 1-3 gives the FID noise.

Torch runs on 1 thread; every tune's wall time is in the table. ``--pair X`` rewrites only
X's record in tune.json and keeps the others'.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, today  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

from refine.io import load_gan, load_ratio, write_json  # noqa: E402
from refine.io.pretrained import pretrained_path  # noqa: E402
from refine.ratio import DiscriminatorRatio  # noqa: E402
from refine.target import LatentTarget  # noqa: E402
from refine.tune import ModeScorer, tune  # noqa: E402
from refine.tune.front import markdown, save_front_plot  # noqa: E402
from refine.tune.space import passes  # noqa: E402

PAIRS = {
    "shipped": {"mixture": "grid25", "threshold": 4.0, "budget": 20.0, "n": 10000, "methods": None},
    "trained": {
        "mixture": "grid25-wgan",
        "threshold": 3.0,
        "budget": 603.0,
        "n": 2000,
        "methods": ["ddls", "dgflow", "dcd", "dot"],
    },
}


def objective(hq: float, kl: float) -> float:
    return hq * math.exp(-kl) if math.isfinite(kl) else 0.0


def hand_rows_shipped(budget: float) -> list[dict]:
    """The rows of benchmarks/results/toy2d.json (fitted ratio) within the budget, with the tune's objective."""
    rows = json.loads((RESULTS / "toy2d.json").read_text())["rows"]
    out = []
    for r in rows:
        if "failed" in r or r["ratio"] != "fitted" or r["g_evals_per_sample"][0] > budget:
            continue
        out.append(
            {
                "label": r["label"],
                "hq_fraction": r["hq_fraction"][0],
                "kl_uniform": r["kl_uniform"][0],
                "modes": r["modes"][0],
                "cost": r["g_evals_per_sample"][0],
                "objective": objective(r["hq_fraction"][0], r["kl_uniform"][0]),
            }
        )
    return out


def hand_rows_trained() -> list[dict]:
    """The hand-given rows of benchmarks/results/toy2d_gradient.json for the trained WGAN-GP."""
    rows = json.loads((RESULTS / "toy2d_gradient.json").read_text())["rows"]
    out = []
    for r in rows:
        if r["pair"] != "trained":
            continue
        cost = max(r["g_evals"][0] + 2 * r["g_backward"][0], r["d_evals"][0] + 2 * r["d_backward"][0])
        out.append(
            {
                "label": r["label"],
                "method": r["method"],
                "hq_fraction": r["hq_fraction"][0],
                "kl_uniform": r["kl_uniform"][0],
                "modes": r["modes"][0],
                "cost": cost,
                "objective": objective(r["hq_fraction"][0], r["kl_uniform"][0]),
                "works": r["halves_lq_keeps_modes"],
            }
        )
    return out


def load_target(pair: str, quick: bool):
    if pair == "shipped":
        gan = load_gan(pretrained_path("toy2d-grid25-gan"))
        return LatentTarget(gan.generator, load_ratio(pretrained_path("toy2d-grid25-ratio"))), None
    from toy2d_gradient import train_wgan_gp

    gen, critic, record = train_wgan_gp(quick)
    return LatentTarget(gen, DiscriminatorRatio(critic, "critic")), record


def run_pair(pair: str, quick: bool, out: Path) -> dict:
    spec = PAIRS[pair]
    target, training = load_target(pair, quick)
    scorer = ModeScorer(spec["mixture"], threshold=spec["threshold"])
    n = 900 if quick else spec["n"]
    t0 = time.perf_counter()
    res = tune(
        target,
        scorer,
        budget=spec["budget"],
        methods=spec["methods"],
        n=n,
        trials=9 if quick else 27,
        keep=1 if quick else 3,
        seed=0,
        progress=False,
    )
    wall = time.perf_counter() - t0
    stem = f"tune_{pair}" + ("_quick" if quick else "")
    save_front_plot(
        out / f"{stem}.png", res, title=f"refine tune, {pair} pair: budget {spec['budget']:g} passes per sample, n {n}"
    )
    raw = scorer(target.generator.sample(n, rng=torch.Generator().manual_seed(12345))[1], "test")
    record = {
        "pair": pair,
        **spec,
        "n": n,
        "wall_time_s": wall,
        "raw_test": raw,
        "result": res.to_dict(),
        "table": markdown(res, scorer.columns),
        "training": training,
    }
    for _m, b in res.best.items():
        t = b["test"]
        if t["status"] == "ok":
            lq_cut = (1 - raw["hq_fraction"]) / max(1 - t["metrics"]["hq_fraction"], 1e-12)
            b["lq_cut_vs_raw"] = lq_cut
            b["works"] = lq_cut >= 2 and t["metrics"]["modes"] >= raw["modes"]
    print(f"[{pair}] {len(res.trials)} trials in {wall:.1f}s; chosen {res.chosen}", flush=True)
    return record


# --------------------------------------------------------------------------- MNIST
#: the tunes of the mnist pair: (key, ratio, budget, methods)
MNIST_TUNES = [
    ("dre_f_sp-20", "dre", 20.0, ["rs", "drs", "sir", "mh"]),
    ("dre_f_sp-89", "dre", 89.0, ["rs", "mh"]),
    ("discriminator-20", "d", 20.0, ["rs", "drs", "sir", "mh"]),
]
#: the README's hand-set rows rescored here (labels of benchmarks/mnist.py's METHODS)
MNIST_HAND = [
    "raw generator",
    "DRE-F-SP: drs (gamma 80)",
    "DRE-F-SP: sir (20 candidates)",
    "DRE-F-SP: rs (M = 99th pct)",
    "DRE-F-SP: rs (exact)",
    "D: drs (DRS, gamma 80)",
    "D: sir (20 candidates)",
]
RATIO_NAMES = {"dre": "DRE-F-SP", "d": "discriminator (refitted, logistic)"}
MNIST_N = 1000  # 2,000 (the README's n) does not fit a 40-minute run on a shared 2-core CPU
MNIST_SEED = 0  # benchmarks/mnist.py's seed: the hand-set rows are the README's draws, rescored
NOISE_SEEDS = (1, 2, 3)
#: the measurements so far, written as they come (a crash in rendering loses nothing)
PARTIAL = REPO / "benchmarks" / "_work" / "tune_mnist_partial.json"


def cnn_space(mnist: str):
    """benchmarks/mnist.py's evaluation CNN (trained once, cached) as a refine feature space: 128-d features."""
    import mnist as mnist_bench

    from refine.eval import FeatureSpace
    from refine.io import file_sha256

    net, _test, acc = mnist_bench.get_evaluator(mnist, lambda m: print(m, flush=True))
    path = mnist_bench.WORK / "eval_cnn.pt"
    sha = file_sha256(path)
    space = FeatureSpace(
        short="cnn",
        network=f"small CNN of benchmarks/mnist.py (conv32-pool-conv64-pool-fc128-fc10), 128-d features, "
        f"test accuracy {acc:.4f} (eval_cnn.pt sha256 {sha[:12]})",
        key=f"mnist-eval-cnn-{sha[:16]}",
        module=mnist_bench._Features(net),
        transform=lambda x: x.float() / 127.5 - 1.0,
        logits=None,
        source={"path": str(path.relative_to(REPO)), "sha256": sha, "test_accuracy": acc},
    )
    return space, acc


def run_mnist(quick: bool, out: Path, mnist: str, n: int = MNIST_N) -> dict:
    import mnist as mnist_bench

    from refine.samplers import get_sampler
    from refine.tune.score import ImageScorer

    t_all = time.perf_counter()
    gan = load_gan(pretrained_path("mnist-dcgan"))
    G = gan.generator
    ratios = {"dre": load_ratio(pretrained_path("mnist-dre-f-sp")), "d": load_ratio(pretrained_path("mnist-d-ratio"))}
    t0 = time.perf_counter()
    space, acc = cnn_space(mnist)
    scorer = ImageScorer(space, f"mnist:{mnist}", image_shape=(1, 28, 28), output_range=G.output_range, n_val=10000)
    setup_s = time.perf_counter() - t0
    print(f"[mnist] feature space and references in {setup_s:.0f}s", flush=True)
    n = 900 if quick else n
    fd = space.keys.fd

    # FID noise: the raw generator with other seeds, on the test split
    noise = []
    for s in NOISE_SEEDS:
        x = get_sampler("none").sample(LatentTarget(G), n, rng=torch.Generator().manual_seed(s)).x
        noise.append(scorer(x, "test")[fd])
    noise_rec = {
        "seeds": list(NOISE_SEEDS),
        fd: noise,
        "mean": sum(noise) / len(noise),
        "std": float(torch.tensor(noise, dtype=torch.float64).std()),
    }
    print(f"[mnist] raw generator over seeds {NOISE_SEEDS}: {noise}", flush=True)

    readme = {r["method"]: r for r in json.loads((RESULTS / "mnist.json").read_text())["rows"]}
    labels = MNIST_HAND[:3] if quick else MNIST_HAND
    hand = []
    for label in labels:
        _, rname, method, opts = next(m for m in mnist_bench.METHODS if m[0] == label)
        target = LatentTarget(G, ratios[rname] if rname else None)
        t0 = time.perf_counter()
        res = get_sampler(method, **opts).sample(target, n, rng=torch.Generator().manual_seed(MNIST_SEED))
        sc = scorer(res.x, "test")
        hand.append(
            {
                "label": label,
                "ratio": rname,
                "method": method,
                "options": opts,
                "test": {k: v for k, v in sc.items() if k != "objective"},
                "cost": passes(res.info),
                "wall_time_s": time.perf_counter() - t0,
                "readme_fid_cnn": readme.get(label, {}).get("fid_cnn"),
                "readme_g_evals": readme.get(label, {}).get("g_evals_per_sample"),
            }
        )
        print(f"[mnist] hand-set {label}: {hand[-1]['test']} at {hand[-1]['cost']['cost']:.1f}", flush=True)
        write_json({"noise": noise_rec, "hand": hand}, PARTIAL)

    tunes = []
    for key, rname, budget, methods in MNIST_TUNES[:1] if quick else MNIST_TUNES:
        target = LatentTarget(G, ratios[rname])
        t0 = time.perf_counter()
        res = tune(
            target,
            scorer,
            budget=budget,
            methods=methods,
            n=n,
            trials=9 if quick else 27,
            keep=1 if quick else 3,
            seed=0,
            progress=False,
        )
        wall = time.perf_counter() - t0
        save_front_plot(
            out / f"tune_mnist_{key}{'_quick' if quick else ''}.png",
            res,
            title=f"refine tune, MNIST, {RATIO_NAMES[rname]} ratio: budget {budget:g} passes per sample, n {n}",
        )
        tunes.append(
            {
                "key": key,
                "ratio": rname,
                "budget": budget,
                "methods": methods,
                "wall_time_s": wall,
                "result": res.to_dict(),
                "table": markdown(res, scorer.columns),
            }
        )
        print(f"[mnist {key}] {len(res.trials)} trials in {wall:.0f}s; chosen {res.chosen}", flush=True)
        write_json({"noise": noise_rec, "hand": hand, "tunes": tunes}, PARTIAL)
    rec = {
        "pair": "mnist",
        "machine": machine(),
        "date": today(),
        "command": f"python benchmarks/tune.py --pair mnist --n {n}" + (" --quick" if quick else ""),
        "n": n,
        "seed": MNIST_SEED,
        "features": space.describe(),
        "scorer": scorer.describe(),
        "evaluator_test_accuracy": acc,
        "setup_s": setup_s,
        "noise": noise_rec,
        "hand": hand,
        "tunes": tunes,
        "wall_time_s": time.perf_counter() - t_all,
        "gradient_methods": "not searched: a backward pass through the ResNet-34 DRE-F-SP per step and sample is too slow here",
    }
    write_json(rec, PARTIAL)
    try:
        rec["table"] = mnist_table(rec)
    except Exception as e:  # noqa: BLE001 - the measurements are kept; --render rebuilds the table
        print(f"[mnist] table failed: {e!r}", flush=True)
        rec["table"] = ""
    return rec


def _fmt_setting(setting: dict) -> str:
    shown = {k: v for k, v in setting.items() if k not in ("batch_size", "burn_in")}
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()) or "–"


def mnist_verdicts(rec: dict) -> list[dict]:
    """Per tune: the chosen setting's test FID against the best hand-set row (same ratio, cost within the budget)."""
    fd = rec["scorer"]["objective"].lstrip("-")
    std = rec["noise"]["std"]
    out = []
    for tu in rec["tunes"]:
        res = tu["result"]
        chosen = res["best"][res["chosen"]]
        t = chosen["test"]
        rows = [
            h
            for h in rec["hand"]
            if h["ratio"] in (tu["ratio"], None) and h["cost"]["cost"] <= tu["budget"] * (1 + 1e-6) + 0.5
        ]
        top = min(rows, key=lambda h: h["test"][fd]) if rows else None
        diff = t["metrics"][fd] - top["test"][fd] if top else float("nan")
        verdict = "beats" if diff < -2 * std else ("within the noise" if diff <= 2 * std else "worse")
        out.append(
            {
                "tune": tu["key"],
                "chosen": res["chosen"],
                "setting": chosen["setting"],
                "test_fid": t["metrics"][fd],
                "test_cost": t["cost"]["cost"],
                "best_hand": top["label"] if top else None,
                "best_hand_fid": top["test"][fd] if top else None,
                "best_hand_cost": top["cost"]["cost"] if top else None,
                "difference": diff,
                "verdict": verdict,
            }
        )
    return out


def mnist_table(rec: dict) -> str:
    """One table: per tune, each method's best setting (validation and test) and the hand-set rows within its budget."""
    fd = rec["scorer"]["objective"].lstrip("-")
    head = [
        "ratio, budget",
        "row",
        "setting",
        "FID CNN (val)",
        "FID CNN (test)",
        "recall (test)",
        "coverage (test)",
        "passes / sample (test)",
        "README FID CNN",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tu in rec["tunes"]:
        res = tu["result"]
        block = f"{RATIO_NAMES[tu['ratio']]}, {tu['budget']:g}"
        order = sorted(res["best"], key=lambda m: -res["best"][m]["validation"]["objective"])
        for m in order:
            b = res["best"][m]
            v, t = b["validation"], b["test"]
            name = f"tuned {m}" + (" **(chosen)**" if m == res["chosen"] else "")
            lines.append(
                f"| {block} | {name} | {_fmt_setting(b['setting'])} | {v['metrics'][fd]:.2f} | {t['metrics'][fd]:.2f} | "
                f"{t['metrics']['recall']:.3f} | {t['metrics']['coverage']:.3f} | {t['cost']['cost']:.1f} | – |"
            )
        for h in rec["hand"]:
            if h["ratio"] not in (tu["ratio"], None) or h["cost"]["cost"] > tu["budget"] + 0.5:
                continue
            readme = f"{h['readme_fid_cnn']:.2f}" if h.get("readme_fid_cnn") is not None else "–"
            lines.append(
                f"| {block} | hand-set: {h['label']} | as in the README | – | {h['test'][fd]:.2f} | {h['test']['recall']:.3f} | "
                f"{h['test']['coverage']:.3f} | {h['cost']['cost']:.1f} | {readme} |"
            )
    nz = rec["noise"]
    lines.append("")
    lines.append(
        f"FID noise: the raw generator with seeds {', '.join(map(str, nz['seeds']))} scores "
        f"{' / '.join(f'{v:.2f}' for v in nz[fd])} on the test split ({nz['mean']:.2f} ± {nz['std']:.2f})."
    )
    lines.append("")
    lines.append(
        "Verdict: the test FID of the setting the tune chose (by validation) against the best hand-set row of the same "
        f"ratio within the budget (the best by test FID, which favours the hand-set rows); a difference within 2 std of "
        f"the raw generator's seed spread (± {2 * nz['std']:.2f}) is called noise."
    )
    lines.append("")
    lines.append(
        "| tune | chosen (by validation) | test FID CNN | passes | best hand-set row within the budget | test FID CNN | passes | difference | verdict |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for v in mnist_verdicts(rec):
        lines.append(
            f"| {v['tune']} | {v['chosen']} ({_fmt_setting(v['setting'])}) | {v['test_fid']:.2f} | {v['test_cost']:.1f} | "
            f"{v['best_hand']} | {v['best_hand_fid']:.2f} | {v['best_hand_cost']:.1f} | {v['difference']:+.2f} | {v['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def render(records: list[dict], quick: bool, top: dict) -> str:
    """The page; ``top`` holds the machine and date of the 2-D pairs' run (the mnist pair states its own)."""
    cmd = "python benchmarks/tune.py" + (" --quick" if quick else "")
    text = f"Machine: {top['machine']}, torch on 1 thread. Date: {top['date']}. `{cmd}`.\n"
    for rec in records:
        if rec["pair"] == "mnist":
            text += render_mnist(rec)
            continue
        res = rec["result"]
        text += (
            f"\n### {rec['pair']} pair: budget {rec['budget']:g} passes per output sample, final n {rec['n']}, "
            f"{len([t for t in res['trials'] if isinstance(t['rung'], int)])} trials in {rec['wall_time_s']:.0f} s\n\n"
        )
        text += rec["table"] + "\n"
        best = res["best"]
        if rec["pair"] == "shipped":
            hand = hand_rows_shipped(rec["budget"])
            top = max(hand, key=lambda r: r["objective"])
            chosen = best[res["chosen"]]
            t = chosen["test"]
            text += (
                f"Hand-set rows of the README's 2-D table within {rec['budget']:g} G evaluations per sample "
                "(benchmarks/results/toy2d.json, mean of 3 seeds x 10,000 samples), same objective:\n\n"
                "| hand-set row | HQ fraction | KL | G evals / sample | objective |\n|---|---|---|---|---|\n"
            )
            text += "".join(
                f"| {r['label']} | {r['hq_fraction']:.3f} | {r['kl_uniform']:.3f} | {r['cost']:.1f} | {r['objective']:.3f} |\n"
                for r in hand
            )
            verdict = "at least as good as" if t["objective"] >= top["objective"] else "worse than"
            text += (
                f"\nTuned without any hand-set option: **{res['chosen']}** ({', '.join(f'{k} {v}' for k, v in chosen['setting'].items())}), "
                f"test objective {t['objective']:.3f} (HQ {t['metrics']['hq_fraction']:.3f}, KL {t['metrics']['kl_uniform']:.3f}) at "
                f"{t['cost']['cost']:.1f} passes per sample: {verdict} the best hand-set row within the budget, "
                f"{top['label']} ({top['objective']:.3f}).\n"
            )
        else:
            hand = hand_rows_trained()
            text += (
                "Against the hand-given settings of benchmarks/results/toy2d_gradient.json (same recipe, T given by hand); "
                "works = halves the raw low-quality fraction with every mode kept:\n\n"
                "| method | tuned (test): HQ / KL / passes | works | best hand-given row: HQ / KL / passes | works |\n|---|---|---|---|---|\n"
            )
            for m, b in best.items():
                t = b["test"]
                mine = [h for h in hand if h["method"] == m]
                h = max(mine, key=lambda r: r["objective"]) if mine else None
                tuned = (
                    f"{t['metrics']['hq_fraction']:.3f} / {t['metrics']['kl_uniform']:.3f} / {t['cost']['cost']:.0f}"
                    if t["status"] == "ok"
                    else f"failed: {t['status']}"
                )
                hand_txt = (
                    f"{h['label']}: {h['hq_fraction']:.3f} / {h['kl_uniform']:.3f} / {h['cost']:.0f}" if h else "–"
                )
                text += f"| {m} | {tuned} | {'yes' if b.get('works') else 'no'} | {hand_txt} | {('yes' if h['works'] else 'no') if h else '–'} |\n"
            raw = rec["raw_test"]
            text += f"\nRaw generator (test seed): HQ {raw['hq_fraction']:.3f}, {raw['modes']} modes, KL {raw['kl_uniform']:.3f}.\n"
    return text


def render_mnist(rec: dict) -> str:
    nt = sum(len([t for t in tu["result"]["trials"] if isinstance(t["rung"], int)]) for tu in rec["tunes"])
    text = (
        f"\n### mnist pair: the shipped DCGAN, DRE-F-SP and discriminator ratios, final n {rec['n']}, "
        f"{nt} trials; {rec['wall_time_s'] / 60:.0f} min in all\n\n"
        f"`{rec['command']}` on {rec['machine']}, {rec['date']}. Scored by FID in {rec['features']['network']} "
        f"(not the ratio's space); validation: {rec['scorer']['validation']['n']} MNIST training images, "
        f"test: the {rec['scorer']['test']['n']} test images. Hand-set rows: benchmarks/mnist.py's settings and seed "
        f"({rec['seed']}), rescored here; the README column is benchmarks/results/mnist.json (same CNN, float samples, "
        "not rounded to 8 bits). Gradient methods: " + rec["gradient_methods"] + ".\n\n"
    )
    text += rec["table"]
    for tu in rec["tunes"]:
        trials = len([t for t in tu["result"]["trials"] if isinstance(t["rung"], int)])
        text += (
            f"\n#### {RATIO_NAMES[tu['ratio']]} ratio, budget {tu['budget']:g} passes per sample: "
            f"{trials} trials in {tu['wall_time_s']:.0f} s (objective = -FID CNN)\n\n"
        )
        text += tu["table"]
    return text


def mnist_default() -> str:
    import os

    return os.path.relpath(Path(os.environ.get("REFINE_SHARED", REPO.parent / "shared")) / "data" / "mnist", REPO)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", choices=["shipped", "trained", "mnist", "all"], default="all")
    ap.add_argument(
        "--n", type=int, default=MNIST_N, help="mnist pair: final n of each tune and n of every rescored row"
    )
    ap.add_argument("--mnist", default=mnist_default(), help="folder with the four MNIST files (the mnist pair)")
    ap.add_argument("--quick", action="store_true", help="small n and few trials: a smoke run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render", action="store_true", help="rewrite the markdown from the JSON only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    stem = "tune_quick" if args.quick else "tune"
    path = args.out / f"{stem}.json"
    if args.render:
        top = json.loads(path.read_text())
        records = top["pairs"]
        for r in records:
            if r["pair"] == "mnist":
                r["table"] = mnist_table(r)
        write_json(top, path)
    else:
        pairs = ["shipped", "trained", "mnist"] if args.pair == "all" else [args.pair]
        records = [
            run_mnist(args.quick, args.out, args.mnist, args.n) if p == "mnist" else run_pair(p, args.quick, args.out)
            for p in pairs
        ]
        old = json.loads(path.read_text()) if path.is_file() and args.pair != "all" else {}
        kept = [r for r in old.get("pairs", []) if r["pair"] not in pairs]
        order = ["shipped", "trained", "mnist"]
        records = sorted(kept + records, key=lambda r: order.index(r["pair"]))
        # machine and date of the 2-D pairs' run (the mnist record carries its own)
        top = {"machine": machine(), "date": today()} if any(p != "mnist" for p in pairs) or not old else old
        top = {"machine": top["machine"], "date": top["date"], "pairs": records}
        write_json(top, path)
    text = render(records, args.quick, top)
    (args.out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
