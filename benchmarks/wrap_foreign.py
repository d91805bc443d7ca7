"""Refining a generator refine did not train: the foreign 2-D WGAN pair in ../shared.

The pair (a third party's DDLS re-implementation, 25-Gaussian grid of the WGAN-GP
convention) is loaded through the foreign route the CLI uses: its state_dicts with the
architecture written in ``examples/wrap_foreign_wgan.py`` (``--arch
examples/wrap_foreign_wgan.py:generator``), the critic read as ``log r = critic / T``.
Each method's samples are scored with the 2-D mode metrics on ``grid25-wgan`` at
threshold 3 (high quality: within 3 std of the nearest mode), over several seeds.

    python benchmarks/wrap_foreign.py                 # writes benchmarks/results/wrap_foreign.{md,json}
    python benchmarks/wrap_foreign.py --n 2000 --seeds 1 --out /tmp/quick
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, pm, today  # noqa: E402

import refine  # noqa: E402
from refine.data.toy2d import get_mixture  # noqa: E402
from refine.io import write_json  # noqa: E402
from refine.io.foreign import load_discriminator, load_generator  # noqa: E402
from refine.metrics import mode_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "wrap_foreign_wgan.py"
METHODS = [
    ("none", {}),
    ("drs", {"gamma": 80}),
    ("mh", {"k": 100}),
    ("sir", {"candidates": 20}),
    ("ddls", {"step_size": 0.01, "steps": 50}),
]


def main(argv=None) -> None:
    shared = Path(os.environ.get("REFINE_SHARED", ROOT.parent / "shared"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=shared / "weights" / "gan" / "toy2d")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--temperatures", default="1,0.25", help="critic temperatures T (log r = critic / T)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    G = load_generator(
        args.weights / "ddls_wgan_25Gauss_G_5000eps_state_dict.pt", arch=f"{EXAMPLE}:generator", latent_shape=2
    )
    mixture = get_mixture("grid25-wgan")
    temps = [float(t) for t in args.temperatures.split(",")]
    rows = []
    for T in temps:
        ratio = load_discriminator(
            args.weights / "ddls_wgan_25Gauss_D_5000eps_state_dict.pt",
            arch=f"{EXAMPLE}:critic",
            output="critic",
            temperature=T,
        )
        target = refine.LatentTarget(G, ratio)
        for method, options in METHODS:
            if method not in refine.list_samplers() or (method == "none" and T != temps[0]):
                continue
            per_seed = []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                res = refine.sample(target, method, n=args.n, rng=torch.Generator().manual_seed(seed), **options)
                m = mode_metrics(res.x, mixture, threshold=3)
                per_seed.append(
                    {
                        **m,
                        "seed": seed,
                        "wall_time_s": time.perf_counter() - t0,
                        "g_evals_per_sample": res.info.get("g_evals_per_sample"),
                        "acceptance_rate": res.info.get("acceptance_rate"),
                    }
                )
                print(
                    f"T={T} {method} seed={seed}: HQ {m['hq_fraction']:.3f}, modes {m['modes']}, KL {m['kl_uniform']:.3f}",
                    flush=True,
                )
            rows.append(
                {
                    "temperature": None if method == "none" else T,
                    "method": method,
                    "options": options,
                    "seeds": per_seed,
                }
            )

    record = {
        "script": "benchmarks/wrap_foreign.py",
        "date": today(),
        "machine": machine(),
        "n": args.n,
        "seeds": args.seeds,
        "data": "grid25-wgan",
        "threshold": 3,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(record, args.out / "wrap_foreign.json")
    lines = [
        f"Foreign 2-D WGAN pair (../shared), loaded from its state_dicts with the architecture in examples/wrap_foreign_wgan.py; "
        f"n = {args.n} per run, mean ± std over {args.seeds} seeds; grid25-wgan, high quality = within 3 std. "
        f"{record['machine']}, {record['date']}.",
        "",
        "| T | method | HQ fraction | modes (of 25) | KL(hist ‖ uniform) | G evals / sample |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["seeds"]
        lines.append(
            f"| {'–' if r['temperature'] is None else r['temperature']} | {r['method']} | {pm([x['hq_fraction'] for x in s])} | "
            f"{pm([x['modes'] for x in s], '{:.1f}')} | {pm([x['kl_uniform'] for x in s])} | {s[0]['g_evals_per_sample']:.0f} |"
        )
    (args.out / "wrap_foreign.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
