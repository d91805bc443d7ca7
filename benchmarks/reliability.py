"""What the guarantees rest on, measured: determinism per sampler, exact resume per training
method, the cost of resumable checkpoints, and how fast a hopeless rejection run gives up.

    python benchmarks/reliability.py [-n 2048]

Writes benchmarks/results/reliability.{json,md}.

1. Determinism, on the shipped 25-Gaussian GAN and its fitted ratio, for every registered
   sampler (small options so the whole matrix runs in minutes): the same seed twice; batch
   sizes 256, 1024 and n; one thread vs two. "yes" means bit-identical samples.
2. Resume, for every registered training method on the 2-D protocol networks (MLPs 2-100-100-100):
   4 epochs straight vs 2 epochs, a checkpoint written and read back, then 2 more epochs.
   "yes" means networks, optimizer state, rng state and loss history are bit-identical.
3. Checkpoint cost for the 2-D GAN: file size with and without the training state, and the
   median time of one atomic write (temporary file, fsync, rename).
4. The proposal budget: exact rejection sampling against a ratio whose bound M is never reached
   in practice (log r = 1000 x_0): proposals made and seconds until the budget error.
5. Peak memory against n: ``refine sample`` in a fresh process per run, its peak resident set
   size (``ru_maxrss``) for 10^4 to 10^8 2-D samples of the shipped GAN (raw, SIR with 4
   candidates up to 10^7, and DRS at gamma 99, which rejects most proposals, up to 10^6) and 10^3 to 10^6 28x28 images of a generator that costs almost nothing
   (``benchmarks/tiny_image_generator.py``), so that the figure is refine's own memory. Flat in n
   above one chunk (``refine.budget.CHUNK_BYTES`` of results) is the aim.
6. Hostile input: ``tests/test_hostile.py`` with its slow cases, every generated case's outcome
   counted (refused with one line, or a complete run).

    python benchmarks/reliability.py --sections memory,hostile   # rerun some sections only

Sections not rerun keep their earlier results (each with its own date) in the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, today, write_results  # noqa: E402

import refine  # noqa: E402
from refine.errors import BudgetExceededError  # noqa: E402
from refine.io import load_gan, load_ratio, safe_load, save_gan  # noqa: E402
from refine.io.pretrained import pretrained_path  # noqa: E402
from refine.ratio import FunctionRatio  # noqa: E402
from refine.samplers import get_sampler, list_samplers  # noqa: E402
from refine.target import LatentTarget  # noqa: E402
from refine.train import list_methods  # noqa: E402
from refine.train.checkpointing import read_training_state, training_state  # noqa: E402
from refine.train.toy2d import save_toy_checkpoint, train_toy  # noqa: E402

SMALL = {
    "rs": {"m_quantile": 0.99},
    "mh": {"k": 64},
    "ddls": {"steps": 20},
    "dcd": {"steps": 20},
    "dgflow": {"steps": 10},
    "dot": {"steps": 20, "pairs": 256},
}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and set(map(str, a)) == set(map(str, b))
            and all(_same(v, {str(k): w for k, w in b.items()}[str(k)]) for k, v in a.items())
        )
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def determinism(n: int) -> list[dict]:
    gan = load_gan(pretrained_path("toy2d-grid25-gan"))
    target = LatentTarget(gan.generator, load_ratio(pretrained_path("toy2d-grid25-ratio")))
    rows = []
    for method in list_samplers():
        opts = SMALL.get(method, {})

        def run(bs=None, threads=1, seed=0):
            o = dict(opts)
            if bs is not None:
                o["batch_size"] = bs * (o.get("candidates", 20) if method == "sir" else 1)
            torch.set_num_threads(threads)
            try:
                return get_sampler(method, **o).sample(target, n, rng=torch.Generator().manual_seed(seed)).x
            finally:
                torch.set_num_threads(1)

        t0 = time.process_time()
        a = run()
        rows.append(
            {
                "method": method,
                "options": opts,
                "same_seed": bool(torch.equal(a, run())),
                "batch_sizes": bool(all(torch.equal(run(256), x) for x in (run(1024), run(n)))),
                "threads_1_vs_2": bool(torch.equal(run(threads=1), run(threads=2))),
                "other_seed_differs": not bool(torch.equal(a, run(seed=1))),
                "cpu_s": round(time.process_time() - t0, 2),
            }
        )
        print(rows[-1], flush=True)
    return rows


def resume(n_train: int, folder: Path) -> list[dict]:
    rows = []
    kw = dict(n_train=n_train, batch_size=512, hidden=100, depth=3, init_seed=0)
    for method in list_methods():
        t0 = time.process_time()

        def final(epochs, resume_state=None, save_at=None):
            rng = torch.Generator().manual_seed(0)
            out = {}

            def on_epoch(epoch, run, trainer):
                state = training_state(trainer, epoch=epoch, rng=rng, history=run.meta["history"])
                if save_at is not None and epoch == save_at:
                    save_toy_checkpoint(folder / f"{method}.pt", run, train_state=state)
                if epoch == epochs:
                    out["state"] = state

            train_toy("grid25", epochs=epochs, method=method, rng=rng, resume=resume_state, on_epoch=on_epoch, **kw)
            return out["state"]

        straight = final(4)
        final(2, save_at=2)
        _, state = read_training_state(folder / f"{method}.pt")
        resumed = final(4, resume_state=state)
        rows.append(
            {"method": method, "bit_identical": _same(straight, resumed), "cpu_s": round(time.process_time() - t0, 2)}
        )
        print(rows[-1], flush=True)
    return rows


def checkpoint_cost(folder: Path) -> dict:
    rng = torch.Generator().manual_seed(0)
    keep = {}

    def on_epoch(epoch, run, trainer):
        keep["run"], keep["state"] = run, training_state(trainer, epoch=epoch, rng=rng, history=run.meta["history"])

    train_toy("grid25", epochs=1, n_train=4096, batch_size=512, rng=rng, init_seed=0, on_epoch=on_epoch)
    run, state = keep["run"], keep["state"]
    plain, full = folder / "weights.pt", folder / "resumable.pt"
    save_gan(
        plain,
        generator=run.generator.net,
        generator_arch=run.archs["generator"],
        prior=run.generator.prior,
        discriminator=run.discriminator,
        discriminator_arch=run.archs["discriminator"],
        meta=run.meta,
    )
    times = []
    for _ in range(20):
        t = time.perf_counter()
        save_toy_checkpoint(full, run, train_state=state)
        times.append(time.perf_counter() - t)
    safe_load(full)
    return {
        "weights_only_bytes": plain.stat().st_size,
        "resumable_bytes": full.stat().st_size,
        "write_median_ms": round(1000 * statistics.median(times), 2),
        "writes": len(times),
    }


def budget() -> dict:
    gan = load_gan(pretrained_path("toy2d-grid25-gan"))
    target = LatentTarget(gan.generator, FunctionRatio(lambda x: 1000.0 * x[:, 0]))
    n = 100
    t = time.perf_counter()
    try:
        refine.sample(target, "rs", n=n, rng=torch.Generator().manual_seed(0), m_quantile=1.0)
        return {"gave_up": False}
    except BudgetExceededError as e:
        msg = str(e)
    return {
        "n": n,
        "budget_per_sample": get_sampler("rs").budget,
        "gave_up": True,
        "seconds": round(time.perf_counter() - t, 2),
        "message": msg,
    }


MEMORY_RUNS = [
    ("2-D, none", "toy", "none", [10**4, 10**5, 10**6, 10**7, 10**8]),
    ("2-D, sir (4 candidates)", "toy", "sir", [10**4, 10**5, 10**6, 10**7]),
    ("2-D, drs (gamma 99: most proposals rejected)", "toy", "drs", [10**4, 10**5, 10**6]),
    ("28x28 images, none", "images", "none", [10**3, 10**4, 10**5, 10**6]),
]


def _child(argv: list[str]) -> None:
    """Run ``refine ARGV`` in this process and print its exit code and peak RSS as JSON."""
    import resource

    from refine.cli import main as cli_main

    sys.argv = ["refine", *argv]
    t = time.perf_counter()
    try:
        cli_main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    print(
        "RESULT "
        + json.dumps(
            {
                "exit": code,
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "seconds": round(time.perf_counter() - t, 2),
            }
        ),
        flush=True,
    )


def memory(folder: Path) -> list[dict]:
    import subprocess

    from tiny_image_generator import TinyImageGenerator

    torch.manual_seed(0)
    sd = folder / "tiny_g.pt"
    torch.save(TinyImageGenerator().state_dict(), sd)
    env = {
        **__import__("os").environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parent),
        "MPLBACKEND": "Agg",
    }
    rows = []
    for label, kind, method, ns in MEMORY_RUNS:
        for n in ns:
            out = folder / f"out-{kind}-{method}-{n}"
            argv = ["sample", "--no-progress", "--device", "cpu", "-m", method, "-n", str(n), "--out", str(out)]
            argv += {"sir": ["-o", "candidates=4"], "drs": ["-o", "gamma=99"]}.get(method, [])
            if kind == "images":
                argv += [
                    "--ckpt",
                    str(sd),
                    "--arch",
                    "tiny_image_generator:TinyImageGenerator",
                    "--latent-shape",
                    "16",
                    "--output-range",
                    "[-1,1]",
                ]
            proc = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True, env=env)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            res = json.loads(line[-1][7:]) if line else {"exit": proc.returncode, "peak_rss": None, "seconds": None}
            size = sum(f.stat().st_size for f in out.glob("*") if f.is_file()) if out.is_dir() else 0
            rows.append(
                {
                    "runs": label,
                    "method": method,
                    "n": n,
                    **res,
                    "output_bytes": size,
                    "error": (proc.stderr.strip().splitlines() or [""])[-1][:200] if res["exit"] else "",
                }
            )
            print(rows[-1], flush=True)
            for f in out.glob("*"):
                f.unlink() if f.is_file() else None
    return rows


def hostile() -> dict:
    import subprocess
    from collections import Counter

    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as log:
        path = Path(log.name)
    env = {**__import__("os").environ, "REFINE_HOSTILE_LOG": str(path), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    t = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "slow or not slow",
            "tests/test_hostile.py",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    seconds = round(time.perf_counter() - t, 1)
    cases = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    path.unlink()
    by = Counter((c["test"].split("::")[-1], c["exit"]) for c in cases)
    tests = sorted({t for t, _ in by})
    return {
        "pytest_exit": proc.returncode,
        "summary": (proc.stdout.strip().splitlines() or [""])[-1],
        "seconds": seconds,
        "cases": len(cases),
        "refused": sum(1 for c in cases if c["exit"] == 2),
        "completed": sum(1 for c in cases if c["exit"] == 0),
        "other_exit": sum(1 for c in cases if c["exit"] not in (0, 2)),
        "per_test": [{"test": t, "refused": by[(t, 2)], "completed": by[(t, 0)]} for t in tests],
    }


SECTIONS = ("determinism", "resume", "checkpoint", "budget", "memory", "hostile")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return _child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2048, help="samples per sampler run")
    ap.add_argument("--n-train", type=int, default=4096, help="training points for the resume check")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {', '.join(SECTIONS)}")
    args = ap.parse_args()
    wanted = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}")
    torch.set_num_threads(1)
    path = RESULTS / "reliability.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    result.setdefault("dates", {})
    result.setdefault("machines", {})
    for name in SECTIONS:  # sections kept from an earlier run keep the machine and date they were measured on
        if name in result and name not in wanted:
            result["machines"].setdefault(name, result.get("machine"))
            result["dates"].setdefault(name, f"undated (the file was last written {result.get('date')})")
    with tempfile.TemporaryDirectory() as tmp:  # the large runs write GBs: the temporary folder must be on a large disk
        folder = Path(tmp)
        runs = {
            "determinism": lambda: determinism(args.n),
            "resume": lambda: resume(args.n_train, folder),
            "checkpoint": lambda: checkpoint_cost(folder),
            "budget": budget,
            "memory": lambda: memory(folder),
            "hostile": hostile,
        }
        for name in wanted:
            result[name] = runs[name]()
            result["dates"][name] = today()
            result["machines"][name] = machine()
            if name == "memory":
                from refine.budget import CHUNK_BYTES

                result["chunk_bytes"] = CHUNK_BYTES
    result.update(
        date=today(),
        machine=machine(),
        command="python benchmarks/reliability.py " + " ".join(sys.argv[1:]),
        n=args.n if "determinism" in wanted else result.get("n", args.n),
        n_train=args.n_train if "resume" in wanted else result.get("n_train", args.n_train),
    )
    write_results("reliability", result, render(result))


def _gb(b) -> str:
    return "–" if b is None else f"{b / 2**30:.2f}"


def render(result: dict) -> str:
    """The markdown page, from the JSON alone."""
    yes = lambda b: "yes" if b else "no"  # noqa: E731
    dates = result.get("dates", {})
    machines = result.get("machines", {})
    when = lambda k: f" ({dates[k]}{', ' + machines[k] if k in machines else ''})" if k in dates else ""  # noqa: E731
    md = [
        f"# Reliability checks\n\nGenerated by `python benchmarks/reliability.py` (last: `{result['command'].strip()}`) on {result['date']}; "
        "each section gives the date and the machine it was measured on.\n\nLast machine: " + result["machine"] + ".\n"
    ]
    if "determinism" in result:
        md += [
            f"## Determinism (shipped 25-Gaussian GAN and fitted ratio, n = {result.get('n')}, CPU){when('determinism')}\n",
            "| method | options | same seed twice | batch sizes 256 / 1024 / n | 1 vs 2 threads | another seed differs |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["determinism"]:
            md.append(
                f"| {r['method']} | {json.dumps(r['options']) if r['options'] else 'defaults'} | {yes(r['same_seed'])} | {yes(r['batch_sizes'])} | "
                f"{yes(r['threads_1_vs_2'])} | {yes(r['other_seed_differs'])} |"
            )
    if "resume" in result:
        md += [
            f"\n## Resume (2-D protocol networks, {result.get('n_train')} training points, 4 epochs vs 2 + checkpoint + 2){when('resume')}\n",
            "| method | bit-identical to the uninterrupted run |",
            "|---|---|",
        ]
        md += [f"| {r['method']} | {yes(r['bit_identical'])} |" for r in result["resume"]]
    if "checkpoint" in result:
        c = result["checkpoint"]
        md += [
            f"\n## Checkpoint cost (2-D GAN, MLPs 2-100-100-100){when('checkpoint')}\n",
            f"Weights only: {c['weights_only_bytes']} bytes; with the training state: {c['resumable_bytes']} bytes; "
            f"one atomic write (temp file, fsync, rename): median {c['write_median_ms']} ms over {c['writes']} writes.\n",
        ]
    b = result.get("budget", {})
    if b.get("gave_up"):
        md += [
            f"## Proposal budget{when('budget')}\n",
            f"rs with log r = 1000 x_0, n = {b['n']}, default budget {b['budget_per_sample']:g} proposals per sample: "
            f"stopped after {b['seconds']} s with: `{b['message']}`\n",
        ]
    if "memory" in result:
        md += [
            f"## Peak memory against n (`refine sample`, one process per run, one thread){when('memory')}\n",
            "Peak resident set size of the whole process (Python, torch and refine); results stream to disk in chunks of "
            f"at most {result.get('chunk_bytes', 0) / 2**20:.0f} MB of samples and latents ({result.get('chunk_bytes', 0) // 16:,} 2-D samples, "
            f"{result.get('chunk_bytes', 0) // (4 * (784 + 16)):,} 28x28 images of this generator), so the peak should stop growing once n passes one chunk.\n",
            "| runs | n | exit | peak RSS (GB) | output on disk (GB) | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["memory"]:
            md.append(
                f"| {r['runs']} | {r['n']:.0e} | {r['exit']}{(' (' + r['error'] + ')') if r.get('error') else ''} | {_gb(r['peak_rss'])} | "
                f"{_gb(r['output_bytes'])} | {r['seconds']} |"
            )
    if "hostile" in result:
        h = result["hostile"]
        md += [
            f"\n## Hostile input (`tests/test_hostile.py`, default and slow cases){when('hostile')}\n",
            f"{h['cases']} generated cases in {h['seconds']} s: {h['refused']} refused with one `error:` line and nothing written, "
            f"{h['completed']} ran to a complete output set, {h['other_exit']} ended otherwise; pytest: {h['summary']}.\n",
            "| test | refused | completed |",
            "|---|---|---|",
        ]
        md += [f"| {r['test']} | {r['refused']} | {r['completed']} |" for r in h["per_test"]]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
