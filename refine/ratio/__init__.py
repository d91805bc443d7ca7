"""Density-ratio estimators: ``log_ratio(x) -> (B,)``, ``r(x) ~ p_data(x) / p_G(x)``."""

from .base import DensityRatio, FunctionRatio, check_log_ratio
from .calibration import IsotonicCalibration, LogisticCalibration, calibrate, calibration_stats
from .discriminator import DISCRIMINATOR_OUTPUTS, DiscriminatorRatio
from .feature import FeatureRatio, sp_loss  # registers the "feature-sp" ratio kind; keep after the imports above

__all__ = [
    "DensityRatio",
    "FunctionRatio",
    "check_log_ratio",
    "DiscriminatorRatio",
    "FeatureRatio",
    "sp_loss",
    "DISCRIMINATOR_OUTPUTS",
    "calibrate",
    "calibration_stats",
    "LogisticCalibration",
    "IsotonicCalibration",
]
