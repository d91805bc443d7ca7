"""Property tests of the log-space math the samplers share (``refine/samplers/_ops.py``) and
of the acceptance / weight rules built on it, at extreme logits (+-1e4), for tiny and huge
batches, and for float16 / bfloat16 scores.

Exact references come from mpmath (60 digits or more) or from float64 formulas written
independently of the code under test. Statistical checks use binomial / chi-square bounds at
a stated false-alarm rate ``ALPHA`` with fixed seeds, so a run is reproducible.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from refine.errors import NonFiniteError
from refine.generator import LatentGenerator, NormalPrior
from refine.ratio import DiscriminatorRatio, FunctionRatio
from refine.samplers import get_sampler
from refine.samplers._ops import accept_log, gumbel, log1mexp, log_ess, log_uniform, resample_rows
from refine.samplers.rejection import DRSSampler, RejectionSampler
from refine.target import LatentTarget

ALPHA = 1e-6  # chance that a correct implementation fails a statistical check (per check, before fixing the seed)
EPS64 = float(torch.finfo(torch.float64).eps)
LOW_PRECISION = [torch.float16, torch.bfloat16]
ALL_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
PROPS = settings(
    max_examples=60, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
HUGE = 1 << 22  # 4M entries

extreme = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False) | st.sampled_from(
    [-1e4, 1e4, 0.0, -0.0, 1e-300, -1e-300]
)
negative = st.floats(min_value=-1e4, max_value=-1e-300, allow_nan=False) | st.sampled_from(
    [-1e4, -1e-300, -5e-324, -math.log(2), -1e-8, -40.0, -745.0]
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def eps_of(dtype) -> float:
    return float(torch.finfo(dtype).eps)


# ----------------------------------------------------------------------------- log1mexp
@PROPS
@given(a=negative)
def test_log1mexp_matches_mpmath_reference(a):
    got = float(log1mexp(torch.tensor([a], dtype=torch.float64))[0])
    with mpmath.workdps(60 + int(-a / 2.3)):  # 1 - e^a must keep the digits of e^a: ~|a| / ln 10 extra
        ref = float(mpmath.log(-mpmath.expm1(mpmath.mpf(a))))
    assert math.isfinite(got) and got <= 0
    assert abs(got - ref) <= 4 * EPS64 * abs(ref) + 1e-300


@PROPS
@given(values=st.lists(negative, min_size=1, max_size=64), dtype=st.sampled_from(LOW_PRECISION + [torch.float32]))
def test_log1mexp_low_precision_stays_finite_and_close(values, dtype):
    a = torch.tensor(values, dtype=torch.float64).to(dtype)
    a = a[a < 0]  # rounding can turn a tiny negative into -0.0, where log(1 - e^0) = -inf is the right answer
    got = log1mexp(a)
    assert got.dtype == dtype
    assert bool(torch.isfinite(got).all())
    ref = log1mexp(a.double())  # the float64 path, checked against mpmath above
    # Evaluating in the low precision costs a few ulps of the input (the branch arguments) and of the output.
    tol = 8 * eps_of(dtype) * (ref.abs() + 1)
    assert bool(((got.double() - ref).abs() <= tol).all())


def test_log1mexp_limits():
    out = log1mexp(torch.tensor([0.0, -0.0, 1.0, -math.inf], dtype=torch.float64))
    assert out[0] == -math.inf and out[1] == -math.inf  # log(1 - 1)
    assert out[2] == -math.inf  # a > 0 is clamped to 0: callers pass a <= 0
    assert out[3] == 0.0


# ----------------------------------------------------------------------------- uniform and Gumbel noise
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_noise_is_finite_on_huge_batches(dtype):
    lu = log_uniform((HUGE,), gen(1), "cpu", dtype)
    assert lu.dtype == dtype and bool(torch.isfinite(lu).all()) and bool((lu <= 0).all())
    g = gumbel((HUGE,), gen(2), "cpu", dtype)
    assert g.dtype == dtype and bool(torch.isfinite(g).all())


def test_noise_on_empty_and_single_batches():
    assert log_uniform((0,), gen(), "cpu").shape == (0,)
    assert gumbel((1, 1), gen(), "cpu").shape == (1, 1)


# ----------------------------------------------------------------------------- accept_log
@PROPS
@given(
    values=st.lists(extreme | st.sampled_from([math.inf, -math.inf]), min_size=0, max_size=256),
    dtype=st.sampled_from(ALL_DTYPES),
    seed=st.integers(0, 2**31),
)
def test_accept_log_is_certain_at_the_extremes(values, dtype, seed):
    la = torch.tensor(values, dtype=torch.float64).to(dtype)
    keep = accept_log(la, gen(seed), "cpu")
    assert keep.shape == la.shape and keep.dtype == torch.bool
    lad = la.double()
    assert bool(keep[lad >= 0].all()), "log alpha >= 0 must always be accepted"
    # log U >= log(2**-53) ~ -36.7: below that the acceptance probability is < 1e-16 and is never taken.
    assert not bool(keep[lad < -37].any())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("p", [1e-3, 0.1, 0.5, 0.9, 0.999])
def test_accept_log_frequency_matches_probability(dtype, p):
    n = 200_000
    la = torch.full((n,), math.log(p), dtype=dtype)
    p_eff = math.exp(float(la[0].double()))  # the probability the rounded input actually asks for
    k = int(accept_log(la, gen(7), "cpu").sum())
    lo, hi = stats.binom.interval(1 - ALPHA, n, p_eff)
    assert lo <= k <= hi, (k, lo, hi, p_eff)


def test_accept_log_huge_batch():
    la = torch.full((HUGE,), math.log(0.25))
    k = int(accept_log(la, gen(3), "cpu").sum())
    lo, hi = stats.binom.interval(1 - ALPHA, HUGE, 0.25)
    assert lo <= k <= hi


# ----------------------------------------------------------------------------- resample_rows
@PROPS
@given(m=st.integers(1, 64), rows=st.integers(1, 16), data=st.data(), dtype=st.sampled_from(ALL_DTYPES))
def test_resample_picks_a_dominant_column(m, rows, data, dtype):
    """A column 1e4 (or 2e4) nats above every other one in its row is always picked."""
    hot = data.draw(st.lists(st.integers(0, m - 1), min_size=rows, max_size=rows))
    base = data.draw(st.sampled_from([-1e4, 0.0]))
    lw = torch.full((rows, m), base, dtype=torch.float64)
    lw[torch.arange(rows), torch.tensor(hot)] = 1e4
    pick = resample_rows(lw.to(dtype), gen(data.draw(st.integers(0, 2**31))))
    assert pick.tolist() == hot


@PROPS
@given(data=st.data(), m=st.integers(2, 32), seed=st.integers(0, 2**31))
def test_resample_never_picks_minus_infinity(data, m, seed):
    finite = data.draw(st.lists(st.booleans(), min_size=m, max_size=m).filter(any))
    vals = data.draw(st.lists(extreme, min_size=m, max_size=m))
    lw = torch.tensor([v if f else -math.inf for v, f in zip(vals, finite)], dtype=torch.float64).expand(8, m)
    pick = resample_rows(lw, gen(seed))
    assert all(finite[i] for i in pick.tolist())


@PROPS
@given(
    values=st.lists(st.floats(-50, 50), min_size=1, max_size=32),
    shift=st.sampled_from([-1e4, -1.0, 1e4]),
    seed=st.integers(0, 2**31),
)
def test_resample_is_invariant_to_a_common_shift(values, shift, seed):
    """Only differences of log weights matter: adding +-1e4 to a row picks the same columns with the same noise."""
    lw = torch.tensor(values, dtype=torch.float64).expand(16, -1)
    assert torch.equal(resample_rows(lw, gen(seed)), resample_rows(lw + shift, gen(seed)))


@pytest.mark.parametrize("offset", [0.0, -1e4, 1e4])
def test_resample_frequencies_follow_the_weights(offset):
    """Chi-square goodness of fit at level ALPHA, for weights p = (0.1, 0.2, 0.3, 0.4) stored as log p + offset."""
    p = np.array([0.1, 0.2, 0.3, 0.4])
    rows = 100_000
    lw = (torch.tensor(np.log(p)) + offset).expand(rows, -1)
    counts = np.bincount(resample_rows(lw, gen(11)).numpy(), minlength=4)
    chi2 = float((((counts - rows * p) ** 2) / (rows * p)).sum())
    assert chi2 <= stats.chi2.ppf(1 - ALPHA, df=3), (counts, chi2)


def test_resample_tiny_and_huge_rows():
    assert resample_rows(torch.zeros(1, 1), gen()).tolist() == [0]
    lw = torch.full((1, HUGE), -1e4)
    lw[0, 123_457] = 1e4
    assert resample_rows(lw, gen(5)).tolist() == [123_457]


# ----------------------------------------------------------------------------- log_ess
def _ess_reference(lw: np.ndarray) -> np.ndarray:
    """Effective sample size (sum w)^2 / sum w^2 of each row, computed in float64 after subtracting the row max."""
    w = np.exp(lw - lw.max(axis=-1, keepdims=True))
    return np.log(w.sum(-1) ** 2 / (w * w).sum(-1))


@st.composite
def weight_rows(draw):
    m = draw(st.integers(1, 48))
    return draw(st.lists(st.lists(extreme, min_size=m, max_size=m), min_size=1, max_size=6))


@PROPS
@given(rows=weight_rows(), dtype=st.sampled_from(ALL_DTYPES))
def test_log_ess_bounds_and_reference(rows, dtype):
    lw = torch.tensor(rows, dtype=torch.float64).to(dtype)
    m = lw.shape[1]
    got = log_ess(lw)
    assert got.dtype == torch.float64 and bool(torch.isfinite(got).all())
    # 1 <= ESS <= m, up to rounding of the two log-sum-exps (values up to 2e4: 4 ulps of 2e4 each).
    slack = 16 * EPS64 * 2e4
    assert bool((got >= -slack).all()) and bool((got <= math.log(m) + slack).all())
    ref = _ess_reference(lw.double().numpy())
    assert np.allclose(got.numpy(), ref, rtol=0, atol=slack + 1e-12)


@PROPS
@given(values=st.lists(st.floats(-100, 100), min_size=1, max_size=48), shift=st.sampled_from([-1e4, 1e4]))
def test_log_ess_is_invariant_to_a_common_shift(values, shift):
    lw = torch.tensor([values], dtype=torch.float64)
    assert abs(float(log_ess(lw + shift)[0]) - float(log_ess(lw)[0])) <= 16 * EPS64 * 2e4


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_log_ess_equal_weights_and_one_dominant(dtype):
    for m in (1, 2, 1000, HUGE):
        eq = torch.full((1, m), 1e4, dtype=dtype)
        assert abs(float(log_ess(eq)[0]) - math.log(m)) <= 1e-9 * math.log(max(m, 2))
    dom = torch.full((3, 50), -1e4, dtype=dtype)
    dom[:, 7] = 1e4
    assert bool((log_ess(dom).abs() <= 1e-12).all())


# ----------------------------------------------------------------------------- rejection acceptance rules
deltas = st.lists(
    st.floats(min_value=-1e4, max_value=0.0) | st.sampled_from([0.0, -1e4, -1e-12, -1e-6]), min_size=1, max_size=300
)


@PROPS
@given(
    delta=deltas,
    gamma=st.floats(0, 100) | st.sampled_from([0.0, 100.0, 80.0]),
    eps=st.sampled_from([1e-6, 1e-3, 1e-12]),
)
def test_drs_acceptance_is_finite_monotone_and_shifted_at_the_percentile(delta, gamma, eps):
    d = torch.tensor(delta, dtype=torch.float64)
    la, info = DRSSampler(gamma=gamma, eps=eps)._log_accept(d)
    assert la.shape == d.shape and bool(torch.isfinite(la).all()) and bool((la <= 0).all())
    assert math.isfinite(info["gamma_shift"])
    # F increases with D - D_M, so does the acceptance probability (up to rounding at |F| ~ 1e4).
    order = torch.argsort(d)
    assert bool((la[order].diff() >= -1e-9).all())
    # The gamma-th percentile of F is moved to 0, i.e. to acceptance 1/2.
    b = len(d)
    half = math.log(0.5)
    at_most_half = int((la <= half + 1e-12).sum())
    above_half = int((la > half + 1e-12).sum())
    assert at_most_half >= gamma / 100 * b - 1
    assert above_half <= (1 - gamma / 100) * b + 1


@PROPS
@given(delta=deltas)
def test_rs_acceptance_is_the_ratio_to_the_bound(delta):
    d = torch.tensor(delta, dtype=torch.float64)
    la, _ = RejectionSampler()._log_accept(d)
    assert torch.equal(la, d)


# ----------------------------------------------------------------------------- scores in low precision
@PROPS
@given(
    p=st.lists(st.floats(0, 1) | st.sampled_from([0.0, 1.0]), min_size=1, max_size=64),
    dtype=st.sampled_from(ALL_DTYPES),
)
def test_prob_output_gives_finite_log_ratios(p, dtype):
    """A discriminator that outputs D(x) = 0 or 1 exactly still gives a finite log ratio (clamped to its dtype's eps)."""
    probs = torch.tensor(p, dtype=torch.float64).to(dtype)
    ratio = DiscriminatorRatio(lambda x: probs, output="prob")
    out = ratio.log_ratio(torch.zeros(len(p), 2))
    assert out.dtype == dtype and bool(torch.isfinite(out).all())
    limit = math.log(1 / eps_of(dtype))
    assert bool((out.double().abs() <= limit * (1 + 2 * eps_of(dtype))).all())


scores = st.floats(allow_nan=True, allow_infinity=True, width=32)


@PROPS
@given(
    values=st.lists(scores, min_size=1, max_size=32),
    dtype=st.sampled_from(ALL_DTYPES),
    temperature=st.sampled_from([1.0, 1e-3, 1e3]),
)
def test_log_weight_is_finite_or_an_error_naming_the_cause(values, dtype, temperature):
    """Whatever a ratio returns (NaN, +-inf, overflow in float16 after the temperature), no non-finite weight leaves the target."""
    s = torch.tensor(values, dtype=torch.float64).to(dtype)
    target = LatentTarget(
        LatentGenerator(lambda z: z, NormalPrior((2,))),
        DiscriminatorRatio(lambda x: s, "critic", temperature=temperature),
    )
    z = torch.zeros(len(values), 2)
    finite = bool(torch.isfinite(target.ratio.log_ratio(z)).all())  # what the ratio gives, in its own dtype
    try:
        lw, _ = target.log_weight(z)
    except NonFiniteError as e:
        assert not finite
        assert "log r(G(z))" in str(e) and "\n" not in str(e)
    else:
        assert finite and bool(torch.isfinite(lw).all())


# ----------------------------------------------------------------------------- samplers at extreme logits
def _half_plane_target(scale: float, dtype) -> LatentTarget:
    """``log r = +scale`` where ``x_0 > 0`` and ``-scale`` elsewhere, returned in ``dtype``; G is the identity."""
    ratio = FunctionRatio(lambda x: torch.where(x[:, 0] > 0, scale, -scale).to(dtype))
    return LatentTarget(LatentGenerator(lambda z: z.clone(), NormalPrior((2,))), ratio)


SAMPLER_OPTS = {
    "rs": {"batch_size": 256, "burn_in": 256},
    # gamma=100 shifts the batch maximum of F to 0. DRS acceptance is relative to its batch: with a
    # lower percentile, a batch whose majority lies on the wrong side accepts those with probability ~1/2.
    "drs": {"batch_size": 256, "burn_in": 256, "gamma": 100.0},
    "mh": {"k": 64, "batch_size": 256},
    "sir": {"candidates": 64, "batch_size": 1024},
}


@settings(max_examples=24, deadline=None, database=None, derandomize=True)
@given(
    method=st.sampled_from(sorted(SAMPLER_OPTS)),
    scale=st.sampled_from([1e4, 1e3, 100.0]),
    dtype=st.sampled_from(ALL_DTYPES),
    n=st.sampled_from([1, 7, 100]),
    seed=st.integers(0, 2**31),
)
def test_samplers_at_extreme_logits_keep_only_the_favoured_half(method, scale, dtype, n, seed):
    """With log r = +-1e4 the target puts all its mass on x_0 > 0; every sampler must return only such points.

    (A point with x_0 <= 0 has acceptance e^-2e4 = 0 in rs, drs and mh; sir keeps one only if all
    64 candidates of its group are on the wrong side, probability 2^-64.)
    """
    res = get_sampler(method, **SAMPLER_OPTS[method]).sample(_half_plane_target(scale, dtype), n, rng=gen(seed))
    assert res.x.shape == (n, 2)
    assert bool((res.x[:, 0] > 0).all())
    for key in ("acceptance_rate", "ess", "proposals_per_sample", "log_M", "gamma_shift"):
        if key in res.info:
            assert math.isfinite(res.info[key]), (key, res.info[key])


@pytest.mark.parametrize("method", sorted(SAMPLER_OPTS))
def test_samplers_with_batches_of_one(method):
    opts = {k: (1 if k in ("batch_size", "burn_in") else v) for k, v in SAMPLER_OPTS[method].items()}
    if method == "sir":
        opts["batch_size"] = 64  # one group of candidates per pass
    res = get_sampler(method, **opts).sample(_half_plane_target(1e4, torch.float16), 3, rng=gen(0))
    assert res.x.shape == (3, 2) and bool(torch.isfinite(res.x).all())
    if (
        method != "drs"
    ):  # with a batch of one, each DRS proposal is its own percentile and is accepted with probability 1/2
        assert bool((res.x[:, 0] > 0).all())


def test_constant_extreme_scores_accept_everything_in_rs():
    """All scores equal to 1e4: log r - log M = 0 for every proposal, so exact RS accepts each one."""
    target = LatentTarget(
        LatentGenerator(lambda z: z.clone(), NormalPrior((2,))), FunctionRatio(lambda x: torch.full((len(x),), 1e4))
    )
    res = get_sampler("rs", batch_size=64, burn_in=64).sample(target, 640, rng=gen(0))
    assert res.info["acceptance_rate"] == 1.0
