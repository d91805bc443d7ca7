"""Before/after comparisons: run several samplers on one target and score each output; the table of the rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ..checks import check_gradients, gradients_through_generator
from ..errors import BudgetExceededError, ConfigError
from ..samplers import get_sampler

__all__ = ["compare_methods", "markdown_table", "split_method_options"]


def split_method_options(methods: Iterable[str], options: dict[str, str]) -> list[tuple[str, dict]]:
    """``["drs", "mh"]`` and ``{"drs.gamma": "90", "mh.k": "100"}`` -> ``[("drs", {"gamma": "90"}), ("mh", {"k": "100"})]``."""
    methods = list(methods)
    per: dict[str, dict] = {m: {} for m in methods}
    for key, value in options.items():
        if "." not in key:
            raise ConfigError(f"option {key}={value}: name the method it is for, e.g. -o drs.gamma=90")
        m, k = key.split(".", 1)
        if m not in per:
            raise ConfigError(
                f"option {key}={value} is for method {m!r}, which is not in --methods ({', '.join(methods)})"
            )
        per[m][k] = value
    return [(m, per[m]) for m in methods]


def compare_methods(
    target,
    methods: list[tuple[str, dict]],
    n: int,
    *,
    seed: int,
    score: Callable[[torch.Tensor], dict],
    progress: bool = False,
    real: torch.Tensor | None = None,
    rng_device="cpu",
    keep_going: bool = False,
) -> list[dict]:
    """One row per method: its scores plus cost (time, G/D evaluations per sample, acceptance).

    Every method gets a fresh generator seeded with ``seed``, so rows are paired comparisons.
    Samplers are built (and their options validated) before any of them runs. With
    ``keep_going``, a method that cannot deliver within its budget (:class:`BudgetExceededError`)
    is a row with its ``error`` and no scores, and the methods after it still run.
    """
    samplers = [(name, get_sampler(name, **opts)) for name, opts in methods]
    for name, s in samplers:
        if s.needs_gradients:  # data-space methods need gradients through the ratio only
            check_gradients(
                target.generator, target.ratio, method=name, through_generator=gradients_through_generator(s)
            )
    rows = []
    for name, s in samplers:
        rng = torch.Generator(device=rng_device).manual_seed(seed)
        try:
            res = s.sample(target, n, rng=rng, progress=progress, real=real)
        except BudgetExceededError as e:  # a method that cannot deliver within its budget is a result
            if not keep_going:
                raise
            rows.append({"method": name, "options": s.options(), "error": str(e).splitlines()[0]})
            continue
        info = res.info
        rows.append(
            {
                "method": name,
                "options": s.options(),
                **score(res.x),
                "wall_time_s": info.get("wall_time_s"),
                "g_evals_per_sample": info.get("g_evals_per_sample"),
                "d_evals_per_sample": info.get("d_evals_per_sample"),
                "acceptance_rate": info.get("acceptance_rate"),
                **_cap(info),
                "_x": res.x,
            }
        )
    return rows


def _cap(info) -> dict:
    """rs whose default bound capped r: the quantile and the capped mass (what the cap trades), for the table."""
    q = info.get("bound_quantile")
    return {"bound_quantile": q, "capped_mass": info.get("capped_mass")} if q is not None and q < 1.0 else {}


def table_columns(columns: list[str], rows: list[dict]) -> list[str]:
    """``columns`` and what some rows call for: ``bound_quantile`` and ``capped_mass`` after the acceptance
    rate where rs capped r, ``error`` last where a method was refused."""
    if any("capped_mass" in r for r in rows):
        at = columns.index("acceptance_rate") + 1 if "acceptance_rate" in columns else len(columns)
        columns = columns[:at] + ["bound_quantile", "capped_mass"] + columns[at:]
    return columns + (["error"] if any("error" in r for r in rows) else [])


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of ``rows`` with ``columns`` (``–`` where a row has no value)."""
    head = "| " + " | ".join(columns) + " |\n|" + "|".join("---" for _ in columns) + "|\n"
    return head + "".join("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |\n" for r in rows)
