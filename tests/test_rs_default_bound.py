"""rs's default bound: exact rs wherever exact rs finishes, a recorded cap where it cannot."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import refine
from refine.errors import BudgetExceededError
from refine.generator import LatentGenerator, NormalPrior
from refine.ratio import FunctionRatio
from refine.samplers import SampleResult
from refine.samplers.rejection import FALLBACK_QUANTILES, capped_mass
from refine.target import LatentTarget


def _target(slope: float):
    """z ~ N(0, 1), G the identity, log r(x) = slope * x: the target is N(slope, 1)."""
    return LatentTarget(LatentGenerator(lambda z: z, NormalPrior((1,))), FunctionRatio(lambda x: slope * x[:, 0]))


def _run(target, n: int, seed: int, **options):
    """The result (or the refusal) and the warnings of one rs run."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = refine.sample(target, "rs", n, rng=torch.Generator().manual_seed(seed), **options)
        except BudgetExceededError as e:
            out = e
    return out, [str(w.message) for w in caught if "exact rs cannot finish" in str(w.message)]


@settings(max_examples=25, deadline=None)
@given(
    slope=st.floats(0.0, 6.0),
    n=st.integers(1, 3000),
    budget=st.floats(1.5, 40.0),
    seed=st.integers(0, 2**16),
)
@example(slope=0.5, n=2000, budget=40.0, seed=0)  # exact rs finishes
@example(slope=6.0, n=2000, budget=40.0, seed=0)  # it cannot: a cap, at the burn-in
def test_default_bound_is_exact_rs_wherever_exact_rs_finishes(slope, n, budget, seed):
    target = _target(slope)
    exact, _ = _run(target, n, seed, budget=budget, m_quantile=1.0)
    auto, warned = _run(target, n, seed, budget=budget)
    if isinstance(exact, SampleResult):
        assert isinstance(auto, SampleResult) and torch.equal(auto.x, exact.x) and torch.equal(auto.z, exact.z)
        assert auto.info["bound_quantile"] == 1.0 and auto.info["capped_mass"] is None and not warned
        assert auto.info["accepted_exact"] == n and auto.info["bound_switched_after"] is None
    elif isinstance(auto, BudgetExceededError):
        assert "no cap at the burn-in's" in str(auto)
    else:
        assert len(auto.x) == n and len(warned) == 1
        assert auto.info["bound_quantile"] in FALLBACK_QUANTILES and 0.0 <= auto.info["capped_mass"] <= 1.0
        assert auto.info["accepted_exact"] <= auto.info["accepted"]


@settings(max_examples=200, deadline=None)
@given(
    log_w=st.lists(st.floats(-30.0, 30.0), min_size=1, max_size=50),
    q=st.floats(0.0, 1.0),
)
@example(log_w=[0.0, math.log(2.0), math.log(4.0)], q=0.5)
def test_capped_mass_bounds_the_total_variation_of_the_cap(log_w, q):
    """On any set of proposals, the share of the target above M bounds the TV distance between the capped target
    (weights min(r, M)) and the exact one (weights r), each normalised over the proposals."""
    lw = torch.tensor(log_w, dtype=torch.float64)
    log_m = float(torch.quantile(lw, q))
    w = (lw - lw.max()).exp()
    capped = torch.minimum(lw, torch.tensor(log_m, dtype=torch.float64)).sub(lw.max()).exp()
    tv = 0.5 * float((w / w.sum() - capped / capped.sum()).abs().sum())
    mass = capped_mass(lw, log_m)
    assert tv <= mass + 1e-9 and 0.0 <= mass <= 1.0 + 1e-12
    assert capped_mass(lw, float(lw.max())) == 0.0


def test_capped_mass_value():
    # r = 1, 2, 4 with M = 2: (4 - 2) / (1 + 2 + 4)
    assert capped_mass(torch.tensor([1.0, 2.0, 4.0]).log(), math.log(2.0)) == pytest.approx(2 / 7)


def test_capped_run_samples_the_capped_target():
    """log r = 8x on N(0, 1): exact rs cannot finish; the default caps r at the burn-in's quantile M (log_M in the
    record) and from then on samples p0 min(r, M) exactly. Its mean, by quadrature, within 4 standard errors."""
    n = 4000  # >= 2,500: the burn-in is not reused, every sample is accepted against the cap
    res, warned = _run(_target(8.0), n, seed=1)
    assert isinstance(res, SampleResult) and len(warned) == 1 and "its burn-in" in warned[0]
    assert res.info["bound_switched_after"] == 0 and res.info["bound_quantile"] == FALLBACK_QUANTILES[0]
    log_m = res.info["log_M"]
    x = torch.linspace(-10.0, 20.0, 300_001, dtype=torch.float64)
    log_p = -0.5 * x**2 + torch.minimum(8.0 * x, torch.tensor(log_m))
    p = (log_p - log_p.max()).exp()
    p /= p.sum()
    mean = float((p * x).sum())
    sd = float((p * (x - mean) ** 2).sum().sqrt())
    assert abs(float(res.x.double().mean()) - mean) < 4 * sd / math.sqrt(n)
    # the record's capped_mass is the burn-in's estimate of the share the cap flattens: the truth is close to 1 here
    assert res.info["capped_mass"] > 0.9


def test_cap_after_a_batch_keeps_the_exact_samples():
    """log r = 2x: the burn-in says exact rs fits, the run finds otherwise as M rises, and the cap takes over then;
    the samples accepted before the switch are kept."""
    res, warned = _run(_target(2.0), 2000, seed=0)
    assert isinstance(res, SampleResult) and len(res.x) == 2000 and len(warned) == 1
    assert res.info["bound_switched_after"] > 0 and 0 < res.info["accepted_exact"] < 2000
    assert f"{res.info['bound_switched_after']} proposals" in warned[0]
    # and exact rs alone, same seed, is refused
    refused, _ = _run(_target(2.0), 2000, seed=0, m_quantile=1.0)
    assert isinstance(refused, BudgetExceededError)


def test_explicit_quantile_is_recorded():
    res, warned = _run(_target(2.0), 500, seed=0, m_quantile=0.95)
    assert res.info["bound_quantile"] == 0.95 and res.info["bound_switched_after"] is None and not warned
    assert res.info["accepted_exact"] == 0
    assert 0.0 < res.info["capped_mass"] < 1.0


def test_cli_says_and_records_the_cap(tmp_path):
    """`refine sample --method rs` on the shipped 2-D GAN, at its defaults: exact rs cannot finish there, so the default
    bound caps r; the command warns, its summary line names the cap, and run.json records it."""
    import json

    from typer.testing import CliRunner

    from refine.cli import app

    out = tmp_path / "rs"
    args = ["sample", "--method", "rs", "--device", "cpu", "--out", str(out), "--no-progress"]  # 10,000 samples
    with pytest.warns(UserWarning, match="exact rs cannot finish within its budget"):
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "r capped at its 0.9" in res.output and "capped mass" in res.output
    info = json.loads((out / "run.json").read_text())["info"]
    assert info["bound_quantile"] in FALLBACK_QUANTILES and 0.0 < info["capped_mass"] <= 1.0
    assert info["accepted"] == 10_000 and info["bound_switched_after"] > 0


def test_summary_line_names_the_cap_of_merged_parts():
    """A run merged from parts (classes, shards) that capped in some of them says so once, with the largest mass."""
    from refine.cli.sample import cap_note
    from refine.samplers import SampleInfo

    def part(q, mass):
        return SampleInfo(method="rs", n=10, extras={"bound_quantile": q, "capped_mass": mass})

    assert cap_note(SampleInfo.merge([part(1.0, None), part(1.0, None)])) == ""
    note = cap_note(SampleInfo.merge([part(1.0, None), part(0.99, 0.3), part(0.95, 0.5)]))
    assert note == " (r capped at its 0.95/0.99 quantile in 2 of 3 parts, capped mass up to 0.5)"
    assert cap_note(part(0.99, 0.25)) == " (r capped at its 0.99 quantile, capped mass up to 0.25)"


def test_comparison_table_shows_the_cap():
    """`refine eval`'s rows: rs capped by its default bound carries its quantile and capped mass, as columns."""
    from refine.eval import compare_methods, markdown_table, table_columns

    score = lambda x: {"mean": float(x.mean())}  # noqa: E731
    with pytest.warns(UserWarning, match="exact rs cannot finish"):
        rows = compare_methods(_target(6.0), [("none", {}), ("rs", {"budget": 40.0})], 2000, seed=0, score=score)
    assert "capped_mass" not in rows[0] and rows[1]["bound_quantile"] in FALLBACK_QUANTILES
    columns = table_columns(["method", "mean", "acceptance_rate", "g_evals_per_sample"], rows)
    assert columns == ["method", "mean", "acceptance_rate", "bound_quantile", "capped_mass", "g_evals_per_sample"]
    assert f"| {rows[1]['bound_quantile']:.4g} |" in markdown_table(rows, columns)
    assert table_columns(["method"], rows[:1]) == ["method"]


def test_conditional_run_caps_class_by_class():
    """Each class has its own bound: a class whose ratio exact rs cannot serve is capped, the others stay exact,
    and the summary line counts the classes capped."""
    from refine.cli.sample import cap_note
    from refine.conditional import ConditionalFunctionRatio

    mu = torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    slope = torch.tensor([0.0, 0.5, 6.0])  # class 2: log r = 6 (x - mu)_0, the target N(6, 1) off its generator
    ratio = ConditionalFunctionRatio(lambda x, y: slope[y] * (x - mu[y])[:, 0], 3)
    target = refine.wrap(lambda z, y: z + mu[y], latent_shape=2, num_classes=3, ratio=ratio)
    with pytest.warns(UserWarning, match="exact rs cannot finish"):
        res = refine.sample(target, "rs", 3000, rng=torch.Generator().manual_seed(0))
    per = res.info["per_class"]
    assert [per[c]["bound_quantile"] for c in ("0", "1")] == [1.0, 1.0]
    assert per["2"]["bound_quantile"] in FALLBACK_QUANTILES
    assert cap_note(res.info).startswith(f" (r capped at its {per['2']['bound_quantile']:g} quantile in 1 of 3 classes")
