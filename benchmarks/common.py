"""Helpers shared by the benchmark scripts: machine description, mean ± std, result files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU ({cpu}), {gpu}, torch {torch.__version__}"


def today() -> str:
    return datetime.date.today().isoformat()


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std of the finite values (None and NaN skipped); ``(nan, nan)`` when none are left."""
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(a) == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def pm(values, fmt: str = "{:.3f}") -> str:
    """``mean ± std`` of the finite values, or ``–`` when there are none."""
    m, s = mean_std(values)
    return "–" if np.isnan(m) else (fmt + " ± " + fmt).format(m, s)


def run_python(args: list[str], **env_vars: str) -> None:
    """Run ``python ARGS`` from the repository root on one thread (the way the shipped files were made), with extra environment variables."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **env_vars}
    print("+ python " + " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=REPO, env=env, check=True)


def refine_cli(args: list[str]) -> None:
    """``refine ARGS`` through :func:`run_python`."""
    run_python(["-m", "refine", *args])


def without_training_state(src: Path, dst: Path) -> None:
    """Write the checkpoint ``src`` to ``dst`` without its resumable training state (optimizers, a second copy of the weights)."""
    from refine.io import safe_load, tensorfile

    ckpt = safe_load(src)
    ckpt.pop("extra", None)
    tensorfile.write(ckpt, dst)  # safetensors for a .safetensors name


def update_manifest(entries: list[dict]) -> None:
    """Add (or replace, by name) ``entries`` in ``pretrained/manifest.json`` with each file's sha256 and size."""
    from refine.io import file_sha256, write_json

    for e in entries:
        p = REPO / "pretrained" / e["file"]
        e["sha256"] = file_sha256(p)
        e["bytes"] = p.stat().st_size
    mf = REPO / "pretrained" / "manifest.json"
    manifest = json.loads(mf.read_text()) if mf.exists() else {"checkpoints": []}
    names = {e["name"] for e in entries}
    manifest["checkpoints"] = [c for c in manifest["checkpoints"] if c["name"] not in names] + entries
    write_json(manifest, mf)
    print(json.dumps(entries, indent=2))


def ran_options(row: dict) -> dict:
    """A result row's sampler options as it ran: rs's bound made explicit (``m_quantile`` 1) in a row recorded when
    exact rs was rs's default, i.e. an rs row without ``m_quantile`` and without the marker ``default_bound``."""
    if row["method"] == "rs" and "m_quantile" not in row["options"] and "default_bound" not in row:
        return {**row["options"], "m_quantile": 1.0}
    return row["options"]


#: what :func:`eval_quality` keeps of a row beside its scores, where the row has it
ROW_KEYS = ("g_evals_per_sample", "bound_quantile", "capped_mass", "error")


def eval_quality(label: str, cmd: list[str], out: Path) -> dict:
    """``refine eval`` with ``cmd`` (whose ``--out`` is ``out``, relative to the repository), run unless
    ``out/eval.json`` holds a run of this very command: each method's Fréchet distance, class KL and
    acceptance, and the feature network."""
    done = REPO / out / "eval.json"
    if not done.is_file() or json.loads(done.read_text()).get("command") != "refine " + " ".join(cmd):
        refine_cli(cmd)
    rec = json.loads(done.read_text())
    return {
        "ratio": label,
        "command": "refine " + " ".join(cmd),
        "rows": [
            {k: r[k] for k in ROW_KEYS if k in r}
            | {k: r.get(k) for k in ("method", "fd", "class_kl", "acceptance_rate")}
            for r in rec["rows"]
        ],
        "features": rec["features"]["network"],
    }


def quality_table(quality: list[dict], acceptance: bool = False) -> list[str]:
    """Markdown rows of :func:`eval_quality` results, the first ratio's raw generator as the baseline."""
    raw = quality[0]["rows"][0]
    extra = (" acceptance |", "---|", " |") if acceptance else ("", "", "")
    lines = [
        "| discriminator | method | FD | vs raw | class KL |" + extra[0],
        "|---|---|---|---|---|" + extra[1],
        f"| – | raw generator | {raw['fd']:.2f} | | {raw['class_kl']:.4f} |" + extra[2],
    ]
    for q in quality:
        for r in q["rows"]:
            if r["method"] == "none":
                continue
            line = f"| {q['ratio']} | {r['method']} | {r['fd']:.2f} | {100 * (r['fd'] / raw['fd'] - 1):+.1f} % | {r['class_kl']:.4f} |"
            if acceptance:
                line += "" if r.get("acceptance_rate") is None else f" {r['acceptance_rate']:.3f}"
                line += " |"
            lines.append(line)
    return lines


def write_results(stem: str, record: dict, markdown: str, folder: Path = RESULTS) -> None:
    """``folder/STEM.json`` and ``folder/STEM.md``, each written atomically, and the Markdown printed."""
    from refine.io import atomic_write, write_json

    folder.mkdir(parents=True, exist_ok=True)
    write_json(record, folder / f"{stem}.json")
    with atomic_write(folder / f"{stem}.md", "w") as f:
        f.write(markdown)
    print(markdown)
