"""Write the benchmark tables of README.md and docs/*.md from the results in benchmarks/results/.

    python benchmarks/render_tables.py            # rewrite every table that differs from its JSON
    python benchmarks/render_tables.py --check    # exit 1 naming each stale table, 0 when all are current
    python benchmarks/render_tables.py --list     # the table names, their JSON and the files that show them

A table in the docs sits between two marker comments and is never edited by hand:

    <!-- table: toy2d/main -->
    ... generated: the table and one line naming its JSON, command, machine and date ...
    <!-- /table -->

The name after ``table:`` is a key of :data:`TABLES`. Where a benchmark script has a Markdown
renderer of its own (``toy2d_gradient.table``, ``cifar10.render``, ``mode_collapse.markdown``,
``throughput.to_markdown``, ``conditional_mnist.render``, ``balanced_mnist.render``, ``reliability.render``) the table is cut
from its output, and ``tune.json`` stores its rendered tables; only the scripts whose table is
built inline in ``main`` (toy2d, mnist, wrap_foreign, eval_mnist) get a renderer here. Rerunning a
benchmark rewrites its JSON; this script then brings the docs up to date, and CI (``.ci/run``)
fails while they are not.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"

#: ``<!-- table: NAME -->`` ... ``<!-- /table -->``, each on a line of its own; the body is everything in between.
MARKER = re.compile(r"^<!-- table: (?P<name>[\w./-]+) -->\n(?P<body>.*?)^<!-- /table -->", re.S | re.M)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def markers(text: str) -> list[re.Match]:
    """The table markers of a page, leaving out those shown inside fenced code blocks."""
    fences = [m.span() for m in FENCE.finditer(text)]
    return [m for m in MARKER.finditer(text) if not any(a <= m.start() < b for a, b in fences)]


def doc_files() -> list[Path]:
    """The files that may hold tables: README.md and every page of docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


# --------------------------------------------------------------------------------------------
# Reading results and reusing the scripts' own renderers


def load(rel: str) -> dict:
    return json.loads((RESULTS / rel).read_text())


@functools.cache
def script(name: str):
    """The benchmark script ``benchmarks/NAME.py`` as a module (its ``main`` is not run)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tables_in(md: str) -> list[str]:
    """The Markdown tables (runs of lines starting with ``|``) of a page, in order."""
    out, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            out.append("\n".join(cur))
            cur = []
    if cur:
        out.append("\n".join(cur))
    return out


def table_after(md: str, heading: str) -> str:
    """The first table after the line ``heading`` of a rendered page."""
    lines = md.splitlines()
    if heading not in lines:
        raise KeyError(f"no line {heading!r} in the rendered page")
    return tables_in("\n".join(lines[lines.index(heading) + 1 :]))[0]


def source(json_rel: str, command: str, machine: str, date: str, extra: str = "") -> str:
    """The line under each table: which JSON, which command, which machine, which date."""
    more = f"; {extra}" if extra else ""
    return f"*From `benchmarks/results/{json_rel}`, written by `{command}` on {machine}, {date}{more}.*"


def block(table: str, src: str) -> str:
    return f"\n{table.strip()}\n\n{src}\n\n"


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.1f} %"


def num(v, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


# --------------------------------------------------------------------------------------------
# One function per table


def toy2d_main() -> str:
    """The script builds this table inside ``main``; the same format, from the JSON."""
    d = load("toy2d.json")
    lines = [
        "| sampler | HQ fraction | low-quality cut vs raw | modes (of 25) | KL(modes ‖ uniform) | G evals / sample | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        if "failed" in r:
            rate = r["failed"].split("(")[1].split(")")[0]
            lines.append(
                f"| {r['label']} | did not finish: {rate} within {r['options'].get('budget', 1000):g} proposals per sample | – | – | – | – | – |"
            )
            continue
        lines.append(
            f"| {r['label']} | {r['hq_fraction'][0]:.3f} ± {r['hq_fraction'][1]:.3f} | {r['lq_reduction_vs_raw']:.1f}× | "
            f"{r['modes'][0]:.1f} ± {r['modes'][1]:.1f} | {r['kl_uniform'][0]:.3f} ± {r['kl_uniform'][1]:.3f} | "
            f"{r['g_evals_per_sample'][0]:.1f} | {r['wall_time_s'][0]:.2f} |"
        )
    src = source(
        "toy2d.json",
        "python benchmarks/toy2d.py",
        d["machine"],
        d["date"],
        f"{d['seeds']} seeds × {d['n']:,} samples, mean ± std",
    )
    return block("\n".join(lines), src)


def toy2d_gradient(pair: str) -> Callable[[], str]:
    def render() -> str:
        d = load("toy2d_gradient.json")
        rows = [r for r in d["rows"] if r["pair"] == pair]
        if not rows:
            raise KeyError(f"no rows for pair {pair!r} in toy2d_gradient.json")
        table = script("toy2d_gradient").table(rows)
        seeds = d["seeds"][pair]
        extra = f"torch on 1 thread; {d['n']:,} samples × {seeds} seed{'s' if seeds > 1 else ''}, mean"
        return block(table, source("toy2d_gradient.json", d["command"], d["machine"], d["date"], extra))

    return render


def tune(pair: str) -> Callable[[], str]:
    def render() -> str:
        d = load("tune.json")
        rec = next(p for p in d["pairs"] if p["pair"] == pair)
        if "tunes" in rec:  # the mnist pair: several tunes and the rescored hand-set rows, its own run and date
            trials = sum(len([t for t in tu["result"]["trials"] if isinstance(t["rung"], int)]) for tu in rec["tunes"])
            budgets = ", ".join(f"{tu['budget']:g}" for tu in rec["tunes"])
            extra = (
                f"torch on 1 thread; budgets {budgets} passes per sample, final n {rec['n']:,}, "
                f"{trials} trials and {len(rec['hand'])} hand-set rows in {rec['wall_time_s'] / 60:.0f} min"
            )
            return block(rec["table"], source("tune.json", rec["command"], rec["machine"], rec["date"], extra))
        trials = len([t for t in rec["result"]["trials"] if isinstance(t["rung"], int)])
        extra = (
            f"torch on 1 thread; budget {rec['budget']:g} passes per sample, final n {rec['n']:,}, "
            f"{trials} trials in {rec['wall_time_s']:.0f} s"
        )
        return block(rec["table"], source("tune.json", "python benchmarks/tune.py", d["machine"], d["date"], extra))

    return render


def mnist_main() -> str:
    """The script builds its table inside ``main``; a condensed one here (ratio in its own column)."""
    d = load("mnist.json")
    lines = [
        "| ratio | method | FID (CNN) | change vs raw | FID (DRE-F-SP features) | class KL | G evals / sample | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        method = r["method"].split(": ", 1)[-1]
        change = None if r["ratio"] is None else -r["fid_cnn_reduction"]
        g = r.get("g_evals_per_sample")
        lines.append(
            f"| {r['ratio'] or '–'} | {method} | {r['fid_cnn']:.2f} | {'–' if change is None else pct(change)} | "
            f"{r['fid_resnet']:.2f} | {r['class_kl']:.3f} | {'–' if g is None else f'{g:.1f}'} | "
            f"{num(r.get('wall_time_s'), '.0f')} |"
        )
    ev = d["evaluator"]
    extra = (
        f"{d['threads']} thread; n = {d['n']:,} per method, seed {d['seed']}; FID (CNN) in the {ev['features']} of a "
        f"{ev['network'].split(',')[0]} (test accuracy {ev['test_accuracy']:.3f}) against {ev['reference']}"
    )
    return block("\n".join(lines), source("mnist.json", d["command"], d["machine"], d["date"], extra))


EVAL_MNIST = [
    ("discriminator", "eval_mnist/discriminator_classifier/eval.json"),
    ("DRE-F-SP", "eval_mnist/dre_f_sp_classifier/eval.json"),
]


def eval_mnist_main() -> str:
    """``refine eval`` writes one eval.json per ratio; the raw generator's row is shown once."""
    lines = [
        "| ratio | method | FD | IS | precision | recall | density | coverage | class KL | G evals / sample |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    dates, torch_v = set(), set()
    for label, rel in EVAL_MNIST:
        d = load(rel)
        dates.add(d["time"][:10])
        torch_v.add(d["versions"]["torch"])
        for r in d["rows"]:
            if r["method"] == "none" and label != EVAL_MNIST[0][0]:
                continue
            fd = r.get("fd", r.get("fid"))  # older files name every Fréchet distance "fid"
            lines.append(
                f"| {'–' if r['method'] == 'none' else label} | {'raw generator' if r['method'] == 'none' else r['method']} | "
                f"{fd:.2f} | {r['is_mean']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['density']:.3f} | "
                f"{r['coverage']:.3f} | {num(r.get('class_kl'), '.4f')} | {r['g_evals_per_sample']:.1f} |"
            )
    d = load(EVAL_MNIST[0][1])
    src = (
        f"*From `benchmarks/results/eval_mnist/*/eval.json`, written by `python benchmarks/eval_mnist.py` "
        f"(`refine eval`, n = {d['n']:,}, seed {d['seed']}) with torch {', '.join(sorted(torch_v))}, "
        f"{', '.join(sorted(dates))}; features: {d['features']['network']}.*"
    )
    return block("\n".join(lines), src)


def cifar10_main() -> str:
    d = load("cifar10.json")
    table = tables_in(script("cifar10").render(d))[0]
    extra = f"{d['threads']} thread; n = {d['n']:,} per method, seed {d['seed']}"
    return block(table, source("cifar10.json", d["command"], d["machine"], d["date"], extra))


def wrap_foreign_main() -> str:
    """The script builds its table inside ``main``; the same columns, with each method's options."""
    pm = script("common").pm
    d = load("wrap_foreign.json")
    lines = [
        "| T | method | HQ fraction | modes (of 25) | KL(hist ‖ uniform) | G evals / sample |",
        "|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        s = r["seeds"]
        opts = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in r["options"].items())
        method = r["method"] + (f" ({opts})" if opts else "")
        temp = "–" if r["temperature"] is None else f"{r['temperature']:g}"
        lines.append(
            f"| {temp} | {method} | {pm([x['hq_fraction'] for x in s])} | "
            f"{pm([x['modes'] for x in s], '{:.1f}')} | {pm([x['kl_uniform'] for x in s])} | {s[0]['g_evals_per_sample']:.0f} |"
        )
    extra = f"n = {d['n']:,} per run, mean ± std over {d['seeds']} seeds; {d['data']}, high quality within {d['threshold']} std"
    return block("\n".join(lines), source("wrap_foreign.json", "python " + d["script"], d["machine"], d["date"], extra))


def mode_collapse(json_rel: str, heading: str) -> Callable[[], str]:
    def render() -> str:
        d = load(json_rel)
        table = table_after(script("mode_collapse").markdown(d), heading)
        extra = f"{d['total_time_s'] / 60:.0f} min in all"
        return block(table, source(json_rel, d["command"], d["machine"], d["date"], extra))

    return render


def throughput(config: str) -> Callable[[], str]:
    def render() -> str:
        d = load("throughput.json")
        cfg = next(c for c in d["configs"] if c["name"] == config)
        table = table_after(script("throughput").to_markdown(d), f"## {cfg['name']}: {cfg['description']}")
        m = d["machine"]
        device = m.get("gpu", "no GPU")
        machine = f"{m['cpu_count']}-core CPU ({m['cpu']}), {device}, torch {m['torch']} on {m['torch_threads']} thread"
        extra = f"{cfg['description']}; median of {d['repeats']} repeats, load average {d['load_start'].split()[0]} at the start"
        cmd = " ".join(["python benchmarks/throughput.py", *d["argv"]])
        return block(table, source("throughput.json", cmd, machine, d["date"], extra))

    return render


def conditional(name: str, which: str) -> Callable[[], str]:
    """The method table (``which="main"``) or the ratio table of ``NAME.json`` (conditional_mnist's renderer)."""

    def render() -> str:
        d = load(f"{name}.json")
        tables = tables_in(script("conditional_mnist").render(d))
        if which == "main":
            s = d["settings"]
            extra = f"{s['n_per_class']} samples per class, seed {d['seed']}; {d['timings_s']['total']:.0f} s in all"
            return block(tables[0], source(f"{name}.json", d["command"], d["machine"], d["date"], extra))
        return block(
            tables[1], source(f"{name}.json", d["command"], d["machine"], d["date"], "fitting time on the CPU")
        )

    return render


def balanced_mnist_main() -> str:
    d = load("balanced_mnist.json")
    table = tables_in(script("balanced_mnist").render(d))[0]
    extra = f"n = {d['n']}, seeds {', '.join(map(str, d['seeds']))} (mean ± std); {d['total_s']:.0f} s in all"
    return block(table, source("balanced_mnist.json", d["command"], d["machine"], d["date"], extra))


def reliability(heading_start: str, section: str) -> Callable[[], str]:
    def render() -> str:
        d = load("reliability.json")
        md = script("reliability").render(d)
        heading = next(line for line in md.splitlines() if line.startswith(heading_start))
        date = d.get("dates", {}).get(section, f"undated (the file was last written {d['date']})")
        cmd = f"python benchmarks/reliability.py --sections {section}"
        where = d.get("machines", {}).get(section, d["machine"])
        return block(table_after(md, heading), source("reliability.json", cmd, where, date))

    return render


def critic_ratio_protocols() -> str:
    """The fine-tuned ratio under the former and the present defaults of `refine fit-ratio`."""
    mod = script("critic_ratio")
    records = {}
    for label, stem in (
        ("10 epochs, lr 1e-3 (former defaults)", "critic_ratio_former"),
        ("defaults", "critic_ratio_defaults"),
    ):
        d = load(f"{stem}.json")
        d["summary"] = mod.summary(d["pairs"])
        records[label] = d
    srcs = [
        source(f"{stem}.json", d["command"], d["machine"], d["date"], f"n {d['n']}, {d['seeds']} seed(s)")
        for stem, d in zip(("critic_ratio_former", "critic_ratio_defaults"), records.values())
    ]
    return block(mod.compare_table(records), "\n".join(srcs))


def critic_ratio(pair: str, stem: str = "critic_ratio") -> Callable[[], str]:
    def render() -> str:
        d = load(f"{stem}.json")
        mod = script("critic_ratio")
        d["summary"] = mod.summary(d["pairs"])  # from the per-run rows, so that the table follows the script's rules
        table = mod.cost_table(d) if pair == "cost" else mod.table(d["summary"], pair)
        extra = f"n {d['n']}, {d['seeds']} seed(s); HQ within 3 std"
        return block(
            table,
            source(
                f"{stem}.json",
                d.get("command", f"python benchmarks/critic_ratio.py --seeds {d['seeds']}"),
                d["machine"],
                d["date"],
                extra,
            ),
        )

    return render


def refit_cost() -> str:
    d = load("refit_cost.json")
    table = tables_in(script("refit_cost").render(d))[0]
    extra = "torch on 1 thread; the GAN: " + d["gan"]["command"].replace("refine train ", "`refine train` ")
    return block(table, source("refit_cost.json", d["command"], d["machine"], d["date"], extra))


def refit_cost_quality() -> str:
    d = load("refit_cost.json")
    table = tables_in(script("refit_cost").render(d))[1]
    return block(
        table, source("refit_cost.json", d["command"], d["machine"], d["date"], "refine eval, n 1,000, seed 0")
    )


def foreign_dcgan(index: int, what: str) -> Callable[[], str]:
    def render() -> str:
        d = load("foreign_dcgan.json")
        table = tables_in(script("foreign_dcgan").render(d))[index]
        return block(table, source("foreign_dcgan.json", d["command"], d["machine"], d["date"], what))

    return render


def dot_demo_training() -> str:
    d = load("dot_demo_training.json")
    table = tables_in(script("dot_demo").render(d))[1]
    cmd = (
        f"python benchmarks/dot_demo.py --seeds {d['seeds']} --epochs {d['train']['epochs']} --track {d['track']} "
        "--no-diagnostics --out dot_demo_training"
    )
    return block(
        table, source("dot_demo_training.json", cmd, d["machine"], d["date"], f"n {d['n']} per seed, mean ± std")
    )


def dot_demo() -> str:
    d = load("dot_demo.json")
    table = tables_in(script("dot_demo").render(d))[0]
    cmd = f"python benchmarks/dot_demo.py --seeds {d['seeds']} --epochs {d['train']['epochs']}"
    return block(table, source("dot_demo.json", cmd, d["machine"], d["date"], f"n {d['n']} per seed, mean ± std"))


#: Every generated table: its marker name and the function that renders its body.
TABLES: dict[str, Callable[[], str]] = {
    "toy2d/main": toy2d_main,
    "toy2d_gradient/shipped": toy2d_gradient("shipped"),
    "toy2d_gradient/wgan": toy2d_gradient("wgan"),
    "toy2d_gradient/trained": toy2d_gradient("trained"),
    "tune/shipped": tune("shipped"),
    "tune/trained": tune("trained"),
    "tune/mnist": tune("mnist"),
    "mnist/main": mnist_main,
    "eval_mnist/main": eval_mnist_main,
    "cifar10/main": cifar10_main,
    "wrap_foreign/main": wrap_foreign_main,
    "mode_collapse/ring8": mode_collapse("mode_collapse.json", "## ring8"),
    "mode_collapse/grid25": mode_collapse("mode_collapse.json", "## grid25-veegan"),
    "mode_collapse/stacked": mode_collapse("mode_collapse_recipe.json", "## Stacked MNIST"),
    "throughput/mlp2d": throughput("mlp2d"),
    "throughput/dcgan32": throughput("dcgan32"),
    "conditional_mnist/main": conditional("conditional_mnist", "main"),
    "conditional_mnist/ratios": conditional("conditional_mnist", "ratios"),
    "balanced_mnist/main": balanced_mnist_main,
    "conditional_cifar10/main": conditional("conditional_cifar10", "main"),
    "conditional_cifar10/ratios": conditional("conditional_cifar10", "ratios"),
    "refit_cost/main": refit_cost,
    "refit_cost/quality": refit_cost_quality,
    "critic_ratio/foreign": critic_ratio("foreign"),
    "critic_ratio/trained": critic_ratio("trained"),
    "critic_ratio/cost": critic_ratio("cost"),
    "critic_ratio_exact/foreign": critic_ratio("foreign", "critic_ratio_exact"),
    "critic_ratio_defaults/foreign": critic_ratio("foreign", "critic_ratio_defaults"),
    "critic_ratio_defaults/protocols": critic_ratio_protocols,
    "critic_ratio_defaults/trained": critic_ratio("trained", "critic_ratio_defaults"),
    "dot_demo/main": dot_demo,
    "dot_demo/training": dot_demo_training,
    "foreign_dcgan/main": foreign_dcgan(0, "refine eval, n 1,000, seed 0"),
    "foreign_dcgan/fits": foreign_dcgan(1, "refine fit-ratio on 20,000 real images"),
    "foreign_dcgan/rs": foreign_dcgan(2, "refine eval, n 1,000, seed 0, the command-defaults ratio"),
    "reliability/determinism": reliability("## Determinism", "determinism"),
    "reliability/memory": reliability("## Peak memory", "memory"),
}


# --------------------------------------------------------------------------------------------
# Rewriting and checking


def render_file(text: str, rendered: dict[str, str], errors: list[str], where: str) -> tuple[str, list[str]]:
    """The page with every table rewritten, and the names of the tables that changed."""
    out, changed, pos = [], [], 0
    for m in markers(text):
        name, new = m["name"], m[0]
        if name not in TABLES:
            errors.append(f"{where}: unknown table {name!r} (known: {', '.join(TABLES)})")
        else:
            if name not in rendered:
                try:
                    rendered[name] = TABLES[name]()
                except Exception as e:  # a broken result file or script: name the table, keep going
                    errors.append(f"{where}: table {name} could not be rendered: {type(e).__name__}: {e}")
            if name in rendered:
                new = f"<!-- table: {name} -->\n{rendered[name]}<!-- /table -->"
        if new != m[0]:
            changed.append(name)
        out += [text[pos : m.start()], new]
        pos = m.end()
    out.append(text[pos:])
    return "".join(out), changed


def run(check: bool, files: list[Path] | None = None) -> int:
    rendered: dict[str, str] = {}
    errors: list[str] = []
    stale: list[str] = []
    for path in files or doc_files():
        where = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
        old = path.read_text()
        new, names = render_file(old, rendered, errors, where)
        stale += [f"{where}: {name}" for name in names]
        if names and not check:
            path.write_text(new)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if check:
        for s in stale:
            print(f"stale table: {s} (run `python benchmarks/render_tables.py`)", file=sys.stderr)
        return 1 if stale or errors else 0
    for s in stale:
        print(f"rewrote {s}")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 naming each stale table")
    ap.add_argument("--list", action="store_true", help="print each table name and the files that show it")
    args = ap.parse_args(argv)
    if args.list:
        shown: dict[str, list[str]] = {name: [] for name in TABLES}
        for path in doc_files():
            for m in markers(path.read_text()):
                shown.setdefault(m["name"], []).append(str(path.relative_to(REPO)))
        for name, where in shown.items():
            print(f"{name}: {', '.join(where) or '(not shown)'}")
        return 0
    return run(args.check)


if __name__ == "__main__":
    sys.exit(main())
