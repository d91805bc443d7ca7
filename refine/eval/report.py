"""What an image evaluation shows: table columns, the markdown report with its caption, sample panels as a PNG."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

from ..errors import ConfigError
from ..io import atomic_write
from ..metrics.fid import FID
from ..metrics.inception_score import IS_MEAN, IS_STD
from ..metrics.keys import CLASS_KL, METRICS
from ..metrics.prdc import COVERAGE, DENSITY, PRECISION, RECALL
from ..plot import image_grid
from .compare import markdown_table, table_columns
from .images import check_uint8
from .reference import RealReference
from .score import default_metrics
from .spaces import FeatureSpace

__all__ = ["IMAGE_COLUMNS", "image_columns", "markdown_report", "save_image_panels"]

_COST_COLUMNS = ["acceptance_rate", "g_evals_per_sample", "d_evals_per_sample", "wall_time_s"]
#: The columns of an image evaluation table in the Inception space (see :func:`image_columns` for the others).
IMAGE_COLUMNS = ["method", FID, IS_MEAN, IS_STD, PRECISION, RECALL, DENSITY, COVERAGE, *_COST_COLUMNS]


def image_columns(space: FeatureSpace, *, cost: bool = True, metrics: Sequence[str] | None = None) -> list[str]:
    """Table columns for ``metrics`` (default: the defaults the space allows) under the space's keys."""
    keys = space.keys
    if metrics is None:
        metrics = default_metrics(space)
    groups = {
        "fid": [keys.fd],
        "kid": [keys.kd_mean, keys.kd_std],
        "is": [keys.is_mean, keys.is_std],
        "prdc": list(keys.prdc),
        "classes": [CLASS_KL],
    }
    cols = ["method"] + [c for m in METRICS if m in metrics for c in groups[m]]
    return cols + (_COST_COLUMNS if cost else [])


def markdown_report(
    rows: list[dict],
    space: FeatureSpace,
    reference: RealReference,
    *,
    cost: bool = True,
    k: int = 3,
    is_splits: int = 10,
    metrics: Sequence[str] | None = None,
) -> str:
    """A caption naming the network and the real reference, then the table."""
    if metrics is None:
        metrics = default_metrics(space, real=reference.features is not None)
    keys = space.keys
    size = f"{reference.image_shape[1]}x{reference.image_shape[2]}x{reference.image_shape[0]}"
    parts = []
    if "fid" in metrics:
        sf = reference.stats_file
        if sf is not None:
            parts.append(
                f"{keys.fd} against the statistics file {sf['path']} (sha256 {sf['sha256'][:12]}, "
                f"{sf['n'] if sf['n'] is not None else 'unrecorded number of'} images)"
            )
        else:
            parts.append(
                f"{keys.fd} against {reference.n if reference.n is not None else 'the cached'} images of {reference.dataset} "
                f"[{reference.split}] at {size}"
            )
    if "is" in metrics:
        parts.append(f"IS from {space.logits}, {is_splits} splits")
    n_real = None if reference.features is None else len(reference.features)
    if "kid" in metrics:
        parts.append(
            f"{keys.kd_mean}/{keys.kd_std} (cubic polynomial kernel, unbiased MMD², mean/std over subsets) against {n_real} "
            f"images of {reference.dataset} [{reference.split}]"
        )
    if "prdc" in metrics:
        parts.append(
            f"precision/recall/density/coverage with k = {k} against {n_real} images of {reference.dataset} [{reference.split}]"
        )
    if "classes" in metrics and reference.class_counts is not None:
        parts.append(
            f"{CLASS_KL}: KL(real || samples) of the histograms of predicted classes ({space.logits}), the real one from "
            f"{int(reference.class_counts.sum())} images of {reference.dataset} [{reference.split}] (diversity: 0 when the "
            "samples' classes are as frequent as the data's)"
        )
    caption = f"Features: {space.network}.\n" + "; ".join(parts) + ". Samples rounded to 8 bits.\n\n"
    return caption + markdown_table(rows, table_columns(image_columns(space, cost=cost, metrics=metrics), rows))


def save_image_panels(
    path: str | os.PathLike,
    panels: dict[str, torch.Tensor],
    *,
    subtitles: dict[str, str] | None = None,
    max_images: int = 64,
    cols: int = 6,
    nrow: int | None = None,
) -> None:
    """Sample grids side by side (8-bit images ``(N, C, H, W)`` per panel), written atomically as a PNG.

    ``nrow`` images per grid row (default: a square grid)."""
    import matplotlib  # only when a picture is drawn

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = len(panels)
    if k == 0:
        raise ConfigError("no panels to draw")
    ncols = min(k, cols)
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, (title, x) in zip(axes.flat, panels.items()):
        check_uint8(x, f"panel {title!r}")
        ax.set_visible(True)
        x = x[:max_images]
        grid = image_grid(x.float() / 255.0, output_range="[0,1]", nrow=nrow or int(math.ceil(math.sqrt(len(x)))))
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255)
        sub = (subtitles or {}).get(title)
        ax.set_title(title + (f"\n{sub}" if sub else ""), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")  # keeps three-line titles inside the picture
    plt.close(fig)
