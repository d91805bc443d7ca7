"""The quality-versus-cost front of a tune: tables and the plot.

The points are the settings that reached the final rung (every method's survivors,
scored on the same number of samples). A point is on the front when no other point is
at least as good for at most the same cost; "best per budget" is, for each budget
level, the best point that costs no more.
"""

from __future__ import annotations

import math
import os

from ..fs import atomic_write

__all__ = ["final_points", "pareto", "best_per_budget", "budget_levels", "markdown", "save_front_plot"]


def final_points(result) -> list[dict]:
    """The finished trials of each method's last rung (the candidates the front is drawn from)."""
    last: dict[str, int] = {}
    for t in result.trials:
        if isinstance(t["rung"], int):
            last[t["method"]] = max(last.get(t["method"], -1), t["rung"])
    return [t for t in result.trials if t["status"] == "ok" and t["rung"] == last.get(t["method"])]


def pareto(points: list[dict]) -> list[dict]:
    """Points no other beats on both objective (higher) and cost (lower), cheapest first."""
    out, best = [], -math.inf
    for p in sorted(points, key=lambda p: (p["cost"]["cost"], -p["objective"])):
        if p["objective"] > best:
            out.append(p)
            best = p["objective"]
    return out


def budget_levels(budget: float) -> list[float]:
    """1, 2, 5, 10, 20, 50, ... up to ``budget``, and ``budget`` itself."""
    levels, k = [], 0
    while True:
        v = (1, 2, 5)[k % 3] * 10 ** (k // 3)
        if v >= budget:
            break
        levels.append(float(v))
        k += 1
    return levels + [float(budget)]


def best_per_budget(points: list[dict], levels: list[float]) -> list[tuple[float, dict | None]]:
    """For each level, the best point costing at most that much (None when none does)."""
    out = []
    for lv in levels:
        fit = [p for p in points if p["cost"]["cost"] <= lv * (1 + 1e-9)]
        out.append((lv, max(fit, key=lambda p: (p["objective"], -p["cost"]["cost"])) if fit else None))
    return out


def _setting_text(setting: dict) -> str:
    hidden = ("batch_size", "burn_in", "pairs")
    return (
        ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in setting.items() if k not in hidden)
        or "–"
    )


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1e3 else f"{v:.3g}"
    return str(v)


def markdown(result, columns: tuple[str, ...]) -> str:
    """Per method, the best setting's validation and test scores and cost; then the best per budget."""
    head = [
        "method",
        "setting",
        "objective (val)",
        "objective (test)",
        *[f"{c} (val / test)" for c in columns],
        "passes / sample (val / test)",
        "trials",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    counts: dict[str, int] = {}
    for t in result.trials:
        if isinstance(t["rung"], int):
            counts[t["method"]] = counts.get(t["method"], 0) + 1
    order = sorted(result.best, key=lambda m: -result.best[m]["validation"]["objective"])
    for m in order:
        b = result.best[m]
        v, t = b["validation"], b["test"]
        chosen = " **(chosen)**" if m == result.chosen else ""
        if t["status"] != "ok":
            test_obj, test_cols, test_cost = f"failed: {t['status']}", ["–"] * len(columns), "–"
        else:
            test_obj = _fmt(t["objective"])
            test_cols = [_fmt(t["metrics"].get(c)) for c in columns]
            test_cost = _fmt(t["cost"]["cost"]) + ("" if t.get("within_budget", True) else " (over budget)")
        cells = [
            f"{m}{chosen}",
            _setting_text(b["setting"]),
            _fmt(v["objective"]),
            test_obj,
            *[f"{_fmt(v['metrics'].get(c))} / {tc}" for c, tc in zip(columns, test_cols)],
            f"{_fmt(v['cost']['cost'])} / {test_cost}",
            str(counts.get(m, 0)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    pts = final_points(result)
    lines += [
        "",
        "Best per budget (passes per output sample; validation objective, final rung):",
        "",
        "| budget | method | setting | objective (val) | passes / sample |",
        "|---|---|---|---|---|",
    ]
    for lv, p in best_per_budget(pts, budget_levels(result.budget)):
        if p is None:
            lines.append(f"| {lv:g} | – | nothing this cheap | – | – |")
        else:
            lines.append(
                f"| {lv:g} | {p['method']} | {_setting_text(p['setting'])} | {_fmt(p['objective'])} | {_fmt(p['cost']['cost'])} |"
            )
    return "\n".join(lines) + "\n"


def save_front_plot(path: str | os.PathLike, result, *, title: str = "") -> None:
    """Objective against passes per sample (log scale): every trial faintly, final-rung points per method, the front, best per budget."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    methods = sorted({t["method"] for t in result.trials})
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for t in result.trials:
        if t["status"] == "ok" and isinstance(t["rung"], int):
            ax.scatter(t["cost"]["cost"], t["objective"], s=6, color=colours[t["method"]], alpha=0.2, linewidths=0)
    pts = final_points(result)
    for m in methods:
        mine = [p for p in pts if p["method"] == m]
        if mine:
            ax.scatter(
                [p["cost"]["cost"] for p in mine],
                [p["objective"] for p in mine],
                s=26,
                color=colours[m],
                label=m,
                edgecolors="k",
                linewidths=0.3,
            )
    front = pareto(pts)
    if front:
        xs = [p["cost"]["cost"] for p in front]
        ys = [p["objective"] for p in front]
        ax.step(xs, ys, where="post", color="0.3", lw=1, label="front")
    for _, p in best_per_budget(pts, budget_levels(result.budget)):
        if p is not None:
            ax.scatter(p["cost"]["cost"], p["objective"], s=120, facecolors="none", edgecolors="red", linewidths=1.2)
    ax.scatter([], [], s=120, facecolors="none", edgecolors="red", label="best per budget")
    ax.axvline(result.budget, color="red", lw=0.6, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("passes through G or D per output sample (backward = 2)")
    ax.set_ylabel("objective on the validation split (higher is better)")
    ax.set_title(title or f"refine tune: budget {result.budget:g} passes per sample, final n {result.n}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
