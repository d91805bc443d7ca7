"""Scores of 8-bit images in a feature space: FID/FD, KID/KD, IS, precision/recall, density/coverage, class-histogram KL.

Result keys name the space (:mod:`refine.metrics.keys`): ``fid`` and ``kid_*`` only in the
Inception space, ``fd`` and ``kd_*`` in any other; every row also carries ``features`` (the
network and its weights' hash). Which metrics run is chosen with ``metrics`` (default
:data:`refine.metrics.keys.DEFAULT_METRICS`; KID is opt-in).

:func:`evaluate_methods` produces one row per sampler (raw generator included) with its scores
and cost through :func:`refine.eval.compare.compare_methods`; :func:`score_images` scores any
set of 8-bit images (a samples file or folder: :func:`refine.eval.images.load_image_samples`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError, ShapeError
from ..metrics.fid import feature_statistics, frechet_distance
from ..metrics.inception_score import IS_MEAN, IS_STD, inception_score
from ..metrics.intra import histogram_kl
from ..metrics.keys import CLASS_KL, DEFAULT_METRICS, METRICS
from ..metrics.kid import KID_SUBSET_SIZE, KID_SUBSETS, kid
from ..metrics.prdc import prdc
from ..samplers import get_sampler
from .compare import compare_methods
from .images import check_uint8, to_uint8
from .reference import RealReference
from .spaces import FeatureSpace

__all__ = ["check_metrics", "row_features", "score_images", "evaluate_methods"]


def row_features(space: FeatureSpace) -> dict:
    """What every result row says about its feature space: the network (with its weights) and the weights' sha256."""
    return {"features": space.network, "features_sha256": space.source.get("sha256")}


def check_metrics(
    metrics: Sequence[str], space: FeatureSpace, reference: RealReference | None = None
) -> tuple[str, ...]:
    """``metrics`` checked against what the space and the reference can give; returns them as a tuple."""
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ConfigError(
            f"metrics must be a non-empty subset of {', '.join(METRICS)}; got {', '.join(metrics) or 'none'}"
        )
    if "is" in metrics and space.logits is None:
        raise ConfigError(
            f"the Inception Score needs class logits, which {space.network} does not have; drop 'is' from --metrics"
        )
    if "classes" in metrics and space.logits is None:
        raise ConfigError(
            f"the class-histogram KL needs class logits, which {space.network} does not have; drop 'classes' from --metrics"
        )
    needs_real = [m for m in metrics if m in NEEDS_REAL]
    if reference is not None and reference.features is None and needs_real:
        raise ConfigError(
            f"{', '.join(needs_real)} compare with real images, and a statistics file holds none; pass --data NAME:ROOT too "
            "or choose --metrics fid,is"
        )
    if (
        reference is not None
        and "classes" in metrics
        and reference.features is not None
        and reference.class_counts is None
    ):
        raise ConfigError(
            f"the real reference holds no class histogram of {space.network}; drop 'classes' from --metrics"
        )
    return metrics


#: Metric groups that compare with real images (a statistics file alone cannot give them).
NEEDS_REAL = ("kid", "prdc", "classes")
#: Metric groups that read the network's class logits.
NEEDS_LOGITS = ("is", "classes")


def default_metrics(space: FeatureSpace, *, real: bool = True) -> tuple[str, ...]:
    """:data:`~refine.metrics.keys.DEFAULT_METRICS` less what the space (no logits) or the reference (``real=False``: no real images) cannot give."""
    return tuple(
        m
        for m in DEFAULT_METRICS
        if (m not in NEEDS_LOGITS or space.logits is not None) and (real or m not in NEEDS_REAL)
    )


def score_images(
    space: FeatureSpace,
    images: torch.Tensor,
    reference: RealReference,
    *,
    k: int = 3,
    is_splits: int = 10,
    is_rng: torch.Generator | None = None,
    batch_size: int = 50,
    progress: bool = False,
    desc: str = "sample features",
    metrics: Sequence[str] | None = None,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    kid_rng: torch.Generator | None = None,
) -> dict:
    """The chosen ``metrics`` of 8-bit ``images`` against ``reference``, under the space's keys (:attr:`FeatureSpace.keys`).

    ``metrics`` (default :data:`~refine.metrics.keys.DEFAULT_METRICS`, IS dropped where the
    space has no logits): ``fid`` Fréchet distance, ``kid`` kernel distance (mean, std over
    ``kid_subsets`` subsets of ``kid_subset_size`` real and sample features, drawn with
    ``kid_rng``; the size used is under ``kid_subset_size``), ``is`` Inception Score,
    ``prdc`` precision/recall/density/coverage with ``k`` neighbours, ``classes`` the
    class-histogram KL ``KL(real || samples)`` of the network's predicted classes (the samples'
    histogram smoothed by half a count per class; its bias grows with the number of classes over
    the number of samples, so compare methods at the same ``n``).
    """
    if metrics is None:
        metrics = default_metrics(space, real=reference.features is not None)
    metrics = check_metrics(metrics, space, reference)
    keys = space.keys
    check_uint8(images, "images")
    if tuple(images.shape[1:]) != tuple(reference.image_shape):
        raise ShapeError(
            f"the images are {tuple(images.shape[1:])} but the real reference was prepared at {tuple(reference.image_shape)}"
        )
    if len(images) < 2:
        raise ShapeError(f"FID needs at least 2 images, got {len(images)}")
    if reference.network != space.network:
        raise ConfigError(f"the real reference was computed with {reference.network}, not with {space.network}")
    if "is" in metrics and len(images) < is_splits:
        raise ConfigError(
            f"the Inception Score with {is_splits} splits needs at least {is_splits} samples, got {len(images)}; "
            "lower the number of splits or draw more samples"
        )
    if "prdc" in metrics:
        if len(images) <= k:
            raise ConfigError(
                f"precision/recall with k={k} nearest neighbours need more than {k} samples, got {len(images)}"
            )
        if len(reference.features) <= k:
            raise ConfigError(
                f"precision/recall with k={k} nearest neighbours need more than {k} real images, got {len(reference.features)}"
            )
    feats, logits = space.extract(images, batch_size=batch_size, progress=progress, desc=desc)
    out: dict = {"n": int(len(images))}
    if "fid" in metrics:
        if feats.shape[1] != reference.mu.shape[0]:
            raise ShapeError(
                f"the reference statistics are {reference.mu.shape[0]}-dimensional but {space.network} gives "
                f"{feats.shape[1]}-d features; use statistics made in this feature space"
            )
        out[keys.fd] = frechet_distance(reference.mu, reference.sigma, *feature_statistics(feats))
    if "kid" in metrics:
        out[keys.kd_mean], out[keys.kd_std], out["kid_subset_size"] = kid(
            reference.features, feats, subsets=kid_subsets, subset_size=kid_subset_size, rng=kid_rng
        )
        out["kid_subsets"] = int(kid_subsets)
    if "is" in metrics:
        out[IS_MEAN], out[IS_STD] = inception_score(logits, splits=is_splits, rng=is_rng)
    if "prdc" in metrics:
        # distances on the network's device (a GPU when there is one)
        out.update(prdc(reference.features.to(space.device), feats, k=k))
    if "classes" in metrics:
        ref = reference.class_counts
        if ref is None or len(ref) != logits.shape[1]:
            raise ConfigError(
                f"the real reference holds no histogram of {space.network}'s {logits.shape[1]} classes; "
                "build it from real images (--data NAME:ROOT) in this feature space"
            )
        counts = torch.bincount(logits.argmax(1).cpu(), minlength=logits.shape[1]).double().numpy()
        out[CLASS_KL] = histogram_kl(ref / ref.sum(), counts / counts.sum(), n=len(images))
    return out


def evaluate_methods(
    target,
    methods: list[tuple[str, dict]],
    n: int,
    *,
    seed: int,
    space: FeatureSpace,
    reference: RealReference,
    output_range: str,
    k: int = 3,
    is_splits: int = 10,
    batch_size: int = 50,
    progress: bool = False,
    real: torch.Tensor | None = None,
    metrics: Sequence[str] | None = None,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
) -> list[dict]:
    """One row per method (``"none"`` is the raw generator): image scores plus cost (see :func:`refine.eval.compare_methods`).

    Each method's samples are rounded to 8 bits and scored in ``space`` against ``reference``;
    the Inception Score's splits and KID's subsets are drawn with ``seed``. Rows hold the samples
    (8-bit) under ``_x`` for pictures, and name the network under ``features`` (its weights'
    hash under ``features_sha256``). ``metrics``: see :func:`score_images`. A method that exceeds its
    proposal budget gets a row with its ``error`` instead of scores; other errors stop the run.
    """

    def score(x: torch.Tensor) -> dict:
        x8 = to_uint8(x, output_range)
        s = score_images(
            space,
            x8,
            reference,
            k=k,
            is_splits=is_splits,
            is_rng=torch.Generator().manual_seed(seed),
            batch_size=batch_size,
            progress=progress,
            metrics=metrics,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            kid_rng=torch.Generator().manual_seed(seed),
        )
        return {**s, **row_features(space), "_x8": x8[:64]}

    if metrics is not None:
        check_metrics(metrics, space, reference)
    for name, opts in methods:  # every option is checked before any method runs
        get_sampler(name, **opts)
    rows = []
    for name, opts in methods:  # one at a time: each method's samples give way to their preview before the next
        (row,) = compare_methods(
            target, [(name, opts)], n, seed=seed, score=score, progress=progress, real=real, keep_going=True
        )
        if "error" not in row:
            row["_x"] = row.pop("_x8")
        rows.append(row)
    return rows
