"""Evaluation: before/after comparisons, feature spaces, real references and their caches, scores, reports.

One module per concern, each importing only the ones listed above it:

- :mod:`~refine.eval.compare`: run several samplers on one target, one scored row each; the table.
- :mod:`~refine.eval.images`: 8-bit images (float samples rounded as a PNG stores them, samples
  read from ``.npz`` files and image folders).
- :mod:`~refine.eval.classifier`: the evaluation classifier trained on the dataset (train, save, load).
- :mod:`~refine.eval.spaces`: :class:`FeatureSpace` and the Inception, classifier and timm spaces.
- :mod:`~refine.eval.reference`: :class:`RealReference`, the cache of real features, ``--ref-stats`` files.
- :mod:`~refine.eval.score`: FID/FD, KID/KD, IS, precision/recall/density/coverage, class-histogram KL of images;
  :func:`evaluate_methods` for a generator and its samplers.
- :mod:`~refine.eval.report`: table columns, the markdown report, sample panels.
- :mod:`~refine.eval.conditional`: class-conditional generators: intra-FID/FD, label accuracy, per-class tables.

Every number comes from one :class:`FeatureSpace`, and every report names it. Real and generated
images go through the same pipeline: 8-bit images ``uint8 (N, C, H, W)`` first, then the
network's own preprocessing on each batch on the network's device.
"""

from .classifier import (
    FEATURES_FORMAT,
    default_classifier_arch,
    load_classifier,
    save_classifier,
    train_classifier,
    train_classifier_file,
)
from .compare import compare_methods, markdown_table, split_method_options, table_columns
from .conditional import (
    LabelledReference,
    conditional_report,
    evaluate_conditional_methods,
    labelled_reference,
    score_labelled,
)
from .images import IMAGE_RANGES, SAMPLE_RANGES, check_uint8, load_image_samples, to_uint8
from .reference import RealReference, real_reference, reference_from_stats
from .report import IMAGE_COLUMNS, image_columns, markdown_report, save_image_panels
from .score import NEEDS_REAL, check_metrics, default_metrics, evaluate_methods, row_features, score_images
from .spaces import FeatureSpace, classifier_space, inception_space, load_feature_space, timm_space

__all__ = [
    "LabelledReference",
    "conditional_report",
    "evaluate_conditional_methods",
    "labelled_reference",
    "score_labelled",
    "compare_methods",
    "markdown_table",
    "split_method_options",
    "table_columns",
    "IMAGE_RANGES",
    "SAMPLE_RANGES",
    "check_uint8",
    "to_uint8",
    "load_image_samples",
    "FEATURES_FORMAT",
    "default_classifier_arch",
    "train_classifier",
    "train_classifier_file",
    "save_classifier",
    "load_classifier",
    "FeatureSpace",
    "inception_space",
    "classifier_space",
    "timm_space",
    "load_feature_space",
    "RealReference",
    "real_reference",
    "reference_from_stats",
    "check_metrics",
    "default_metrics",
    "NEEDS_REAL",
    "row_features",
    "score_images",
    "evaluate_methods",
    "IMAGE_COLUMNS",
    "image_columns",
    "markdown_report",
    "save_image_panels",
]
