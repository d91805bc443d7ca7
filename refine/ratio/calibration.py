"""Calibrating discriminator scores on held-out real vs generated samples (as in MH-GAN).

A discriminator's logit is a density ratio only if the discriminator is calibrated
for the *final* generator. :func:`calibrate` fits a monotone map from the raw logit
``s`` to ``P(real | s)`` on held-out data and returns the calibrated log ratio
``logit P(real | s) - log(n_real / n_fake)`` (the second term removes the class
balance of the calibration set):

- ``"logistic"``: ``P = sigmoid(a s + b)`` (Platt scaling; smooth, differentiable).
- ``"isotonic"``: a non-decreasing step function fitted by isotonic regression
  (flexible, but not differentiable: gradient samplers refuse it).

Both are stored as plain numbers so that a calibrated ratio saves and loads with
``weights_only=True``. The report gives, before and after, the Dawid Z statistic
used by MH-GAN (``sum(y - p) / sqrt(sum p (1 - p))``, about N(0, 1) when calibrated),
the Brier score and the expected calibration error, measured on a half of the data
the map was not fitted on.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConfigError, ShapeError
from ..validate import as_float

__all__ = [
    "LogisticCalibration",
    "IsotonicCalibration",
    "calibrate",
    "calibration_stats",
    "CALIBRATIONS",
    "calibration_from_config",
]


#: logistic regression's inverse L2 penalty on the slope in :func:`calibrate`
_C = 1e6
#: The largest slope, intercept or log prior odds a logistic calibration may hold. The fit's
#: penalty bounds the slope: at the optimum, a^2 / (2 C) <= n log 2 (the loss at a = 0), so
#: |a| <= sqrt(2 C n log 2), 1.2e9 for n = 10^12 calibration samples, more than any fit uses; an
#: intercept moves log r by the same order. A larger value is a damaged file, and in float32 it
#: would turn ordinary scores into infinite log ratios.
LOGISTIC_LIMIT = 1.2e9


class LogisticCalibration:
    differentiable = True

    def __init__(self, a: float, b: float, log_prior_odds: float = 0.0) -> None:
        lim = {"minimum": -LOGISTIC_LIMIT, "maximum": LOGISTIC_LIMIT}
        self.a, self.b = as_float(a, "calibration slope a", **lim), as_float(b, "calibration intercept b", **lim)
        self.log_prior_odds = as_float(log_prior_odds, "calibration log prior odds", **lim)

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        return self.a * s + (self.b - self.log_prior_odds)

    def prob(self, s: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.a * s + self.b)

    def to_config(self) -> dict:
        return {"name": "logistic", "a": self.a, "b": self.b, "log_prior_odds": self.log_prior_odds}

    def __repr__(self) -> str:
        return f"LogisticCalibration(a={self.a:.4g}, b={self.b:.4g})"


class IsotonicCalibration:
    differentiable = False

    def __init__(self, x: list[float], y: list[float], log_prior_odds: float = 0.0, eps: float = 1e-6) -> None:
        if not isinstance(x, (list, tuple)) or not isinstance(y, (list, tuple)) or len(x) != len(y) or len(x) < 1:
            raise ConfigError("isotonic calibration needs matching, non-empty knot lists")
        self.x = [as_float(v, "isotonic knot") for v in x]
        self.y = [as_float(v, "isotonic value", minimum=0.0, maximum=1.0) for v in y]
        if any(b < a for a, b in zip(self.x, self.x[1:])) or any(b < a for a, b in zip(self.y, self.y[1:])):
            raise ConfigError("isotonic calibration knots and values must be non-decreasing")
        self.log_prior_odds = as_float(log_prior_odds, "calibration log prior odds")
        self.eps = as_float(eps, "isotonic eps", minimum=0.0, maximum=0.5, open_min=True)

    def prob(self, s: torch.Tensor) -> torch.Tensor:
        xs = torch.tensor(self.x, dtype=s.dtype, device=s.device)
        ys = torch.tensor(self.y, dtype=s.dtype, device=s.device)
        if len(self.x) == 1:
            return ys.expand_as(s).clone()
        sc = s.clamp(xs[0], xs[-1])
        i = torch.searchsorted(xs, sc.detach().contiguous()).clamp(1, len(self.x) - 1)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        t = torch.where(x1 > x0, (sc - x0) / (x1 - x0).clamp_min(torch.finfo(s.dtype).tiny), torch.ones_like(sc))
        return y0 + t * (y1 - y0)

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        p = self.prob(s).clamp(self.eps, 1 - self.eps)
        return torch.logit(p) - self.log_prior_odds

    def to_config(self) -> dict:
        return {"name": "isotonic", "x": self.x, "y": self.y, "log_prior_odds": self.log_prior_odds, "eps": self.eps}

    def __repr__(self) -> str:
        return f"IsotonicCalibration({len(self.x)} knots)"


CALIBRATIONS = {"logistic": LogisticCalibration, "isotonic": IsotonicCalibration}


def calibration_from_config(cfg: dict | None):
    if cfg is None:
        return None
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name not in CALIBRATIONS:
        raise ConfigError(f"unknown calibration {name!r}; valid: {', '.join(CALIBRATIONS)}")
    return CALIBRATIONS[name](**cfg)


def calibration_stats(p: np.ndarray, y: np.ndarray, bins: int = 10) -> dict:
    """Dawid's Z statistic, Brier score, ECE and log loss of probabilities ``p`` for labels ``y``."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(y, dtype=np.float64)
    var = np.sum(p * (1 - p))
    z = float(np.sum(y - p) / math.sqrt(var)) if var > 0 else float("nan")
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return {
        "z": z,
        "brier": float(np.mean((p - y) ** 2)),
        "ece": float(ece),
        "log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
    }


def _fit(method: str, s: np.ndarray, y: np.ndarray, log_prior_odds: float):
    if method == "logistic":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=_C, max_iter=1000)
        lr.fit(s[:, None], y)
        return LogisticCalibration(lr.coef_[0, 0], lr.intercept_[0], log_prior_odds)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
    iso.fit(s, y)
    return IsotonicCalibration(iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist(), log_prior_odds)


@torch.no_grad()
def calibrate(
    ratio,
    real: torch.Tensor,
    fake: torch.Tensor,
    method: str = "logistic",
    *,
    rng: torch.Generator | None = None,
    batch_size: int = 4096,
):
    """Fit a calibration of ``ratio``'s logit on held-out ``real`` and ``fake`` samples.

    ``ratio`` is a :class:`~refine.ratio.DiscriminatorRatio`. Returns ``(calibrated_ratio, report)``
    where ``report`` holds the statistics before and after on a held-out half, and the
    final map is refitted on all the data.
    """
    if method not in CALIBRATIONS:
        raise ConfigError(f"unknown calibration {method!r}; valid: {', '.join(CALIBRATIONS)}")
    if len(real) < 2 or len(fake) < 2:
        raise ShapeError(f"calibration needs at least 2 real and 2 generated samples, got {len(real)} and {len(fake)}")

    def logits(x):
        return torch.cat(
            [ratio.logit(x[i : i + batch_size]).double().cpu() for i in range(0, len(x), batch_size)]
        ).numpy()

    s = np.concatenate([logits(real), logits(fake)])
    y = np.concatenate([np.ones(len(real)), np.zeros(len(fake))])
    if not np.isfinite(s).all():
        raise ConfigError(
            f"discriminator returned {int((~np.isfinite(s)).sum())} non-finite scores on the calibration data"
        )
    log_prior_odds = math.log(len(real) / len(fake))
    perm = torch.randperm(len(s), generator=rng).numpy()
    fit_idx, test_idx = perm[: len(s) // 2], perm[len(s) // 2 :]
    held = _fit(method, s[fit_idx], y[fit_idx], log_prior_odds)
    st = torch.from_numpy(s[test_idx])
    before = calibration_stats(torch.sigmoid(st + log_prior_odds).numpy(), y[test_idx])
    after = calibration_stats(held.prob(st).numpy(), y[test_idx])
    final = _fit(method, s, y, log_prior_odds)
    report = {"method": method, "n_real": int(len(real)), "n_fake": int(len(fake)), "before": before, "after": after}
    return ratio.with_calibration(final), report
