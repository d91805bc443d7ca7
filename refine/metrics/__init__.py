"""Evaluation metrics: 2-D mode metrics, FID and KID, Inception Score (pytorch-fid's Inception),
precision/recall, density/coverage, feature statistics, and the result keys (:mod:`.keys`)."""

from .features import extract_features, iter_features
from .fid import (
    FID,
    StatisticsCache,
    StatsAccumulator,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    load_statistics,
    save_statistics,
)
from .inception_score import IS_MEAN, IS_STD, inception_score
from .keys import CLASS_KL, DEFAULT_METRICS, FD, KD_MEAN, KD_STD, KID_MEAN, KID_STD, METRICS, metric_keys, parse_metrics
from .kid import kid, mmd2_unbiased, polynomial_kernel
from .prdc import COVERAGE, DENSITY, PRECISION, RECALL, density_coverage, knn_radii, prdc, precision_recall
from .toy2d import HQ_FRACTION, KL_UNIFORM, MODES, mode_metrics

# The Inception network imports torchvision and pytorch-fid: load it on first use only.
_LAZY_INCEPTION = (
    "FIDInceptionV3",
    "load_inception",
    "find_inception_weights",
    "inception_features",
    "to_inception_input",
    "FID_WEIGHTS_FILE",
)


def __getattr__(name: str):
    if name in _LAZY_INCEPTION:
        from . import inception

        return getattr(inception, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "mode_metrics",
    "HQ_FRACTION",
    "MODES",
    "KL_UNIFORM",
    "FID",
    "frechet_distance",
    "fid_from_features",
    "feature_statistics",
    "StatsAccumulator",
    "save_statistics",
    "load_statistics",
    "StatisticsCache",
    "IS_MEAN",
    "IS_STD",
    "inception_score",
    "FD",
    "KID_MEAN",
    "KID_STD",
    "KD_MEAN",
    "KD_STD",
    "CLASS_KL",
    "METRICS",
    "DEFAULT_METRICS",
    "metric_keys",
    "parse_metrics",
    "kid",
    "mmd2_unbiased",
    "polynomial_kernel",
    "PRECISION",
    "RECALL",
    "DENSITY",
    "COVERAGE",
    "prdc",
    "precision_recall",
    "density_coverage",
    "knn_radii",
    "extract_features",
    "iter_features",
    *_LAZY_INCEPTION,
]
