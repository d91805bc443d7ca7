"""refine tune on the 2-D pairs, against the hand-set rows of the README's 2-D tables.

    python benchmarks/tune.py [--pair shipped|trained|all] [--quick]

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

Torch runs on 1 thread; every tune's wall time is in the table.
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

from refine.io import load_gan, load_ratio, write_json  # noqa: E402
from refine.io.pretrained import pretrained_path  # noqa: E402
from refine.ratio import DiscriminatorRatio  # noqa: E402
from refine.target import LatentTarget  # noqa: E402
from refine.tune import ModeScorer, tune  # noqa: E402
from refine.tune.front import markdown, save_front_plot  # noqa: E402

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


def render(records: list[dict], quick: bool) -> str:
    cmd = "python benchmarks/tune.py" + (" --quick" if quick else "")
    text = f"Machine: {machine()}, torch on 1 thread. Date: {today()}. `{cmd}`.\n"
    for rec in records:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", choices=["shipped", "trained", "all"], default="all")
    ap.add_argument("--quick", action="store_true", help="small n and few trials: a smoke run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render", action="store_true", help="rewrite the markdown from the JSON only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    stem = "tune_quick" if args.quick else "tune"
    if args.render:
        records = json.loads((args.out / f"{stem}.json").read_text())["pairs"]
    else:
        pairs = ["shipped", "trained"] if args.pair == "all" else [args.pair]
        records = [run_pair(p, args.quick, args.out) for p in pairs]
        write_json({"machine": machine(), "date": today(), "pairs": records}, args.out / f"{stem}.json")
    text = render(records, args.quick)
    (args.out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
