"""Result keys of the image metrics, and which metrics a run computes.

A Fréchet distance is "FID" only in the Inception space it was defined in; computed with any
other network (a dataset-trained classifier, a timm backbone such as DINOv2) it is a different
number, so it gets a different key. As in dgm-eval, the key names the metric and the record
names the network: every row of ``refine eval`` carries ``features`` (the network and its
weights' hash) next to

=====================  =====================  ==========================================
metric                 Inception space        any other feature space
=====================  =====================  ==========================================
Fréchet distance       ``fid``                ``fd``
kernel distance (KID)  ``kid_mean/kid_std``   ``kd_mean/kd_std``
Inception Score        ``is_mean/is_std``     ``is_mean/is_std`` (from that network's logits)
class-histogram KL     ``class_kl``           ``class_kl`` (that network's predicted classes)
=====================  =====================  ==========================================

The keys are constants here; code that reads results should use :func:`metric_keys` rather
than spell them out.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import ConfigError
from .fid import FID
from .inception_score import IS_MEAN, IS_STD
from .prdc import COVERAGE, DENSITY, PRECISION, RECALL

__all__ = [
    "FID",
    "FD",
    "KID_MEAN",
    "KID_STD",
    "KD_MEAN",
    "KD_STD",
    "CLASS_KL",
    "METRICS",
    "DEFAULT_METRICS",
    "MetricKeys",
    "metric_keys",
    "parse_metrics",
]

FD = "fd"
"""Fréchet distance in a feature space other than Inception's."""
KID_MEAN, KID_STD = "kid_mean", "kid_std"
"""Kernel Inception Distance (mean and std over subsets), Inception space only."""
KD_MEAN, KD_STD = "kd_mean", "kd_std"
"""Kernel distance in a feature space other than Inception's."""

CLASS_KL = "class_kl"
"""``KL(real || samples)`` of the histograms of the network's predicted classes: a diversity figure next to quality."""

#: Metric groups ``refine eval --metrics`` takes: Fréchet distance, kernel distance, Inception Score,
#: precision/recall/density/coverage, class-histogram KL.
METRICS = ("fid", "kid", "is", "prdc", "classes")
#: What runs when no metrics are named: the Fréchet distance, IS, precision/recall and the class-histogram KL; KID is opt-in.
DEFAULT_METRICS = ("fid", "is", "prdc", "classes")
_ALIASES = {"fd": "fid", "kd": "kid", "pr": "prdc", "class_kl": "classes", "class": "classes"}


class MetricKeys(NamedTuple):
    """The result keys of one feature space."""

    fd: str
    kd_mean: str
    kd_std: str
    is_mean: str = IS_MEAN
    is_std: str = IS_STD
    prdc: tuple[str, ...] = (PRECISION, RECALL, DENSITY, COVERAGE)


def metric_keys(inception: bool) -> MetricKeys:
    """The keys for the Inception space (``inception=True``) or for any other one."""
    return MetricKeys(FID, KID_MEAN, KID_STD) if inception else MetricKeys(FD, KD_MEAN, KD_STD)


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """``"fid,kid"`` -> ``("fid", "kid")`` in the canonical order; None or ``""`` -> :data:`DEFAULT_METRICS`.

    ``fd`` and ``kd`` are accepted for ``fid`` and ``kid`` (the same computation in a
    non-Inception space).
    """
    if text is None or not text.strip():
        return DEFAULT_METRICS
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    names = [_ALIASES.get(t, t) for t in names]
    unknown = [t for t in names if t not in METRICS]
    if unknown:
        raise ConfigError(
            f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)} (e.g. --metrics fid,kid)"
        )
    return tuple(m for m in METRICS if m in names)
