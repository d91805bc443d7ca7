"""Pictures: scatter plots for 2-D samples, grids for images (PNG, written atomically)."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from .fs import atomic_write

__all__ = ["save_scatter_panels", "save_image_grid", "image_grid"]


def save_scatter_panels(
    path: str | os.PathLike,
    panels: dict[str, np.ndarray],
    *,
    means=None,
    lim: float | None = None,
    max_points: int = 5000,
    subtitles: dict[str, str] | None = None,
) -> None:
    """One scatter plot per entry of ``panels`` (title -> (N, 2) array), side by side."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = len(panels)
    cols = min(k, 4)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    if lim is None:
        allpts = np.concatenate([np.asarray(v)[:max_points] for v in panels.values()])
        lim = float(np.quantile(np.abs(allpts), 0.995)) * 1.15 if len(allpts) else 1.0
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, (title, pts) in zip(axes.flat, panels.items()):
        pts = np.asarray(pts)[:max_points]
        ax.set_visible(True)
        ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.35, color="tab:blue", linewidths=0)
        if means is not None:
            m = np.asarray(means)
            ax.scatter(m[:, 0], m[:, 1], s=12, marker="x", color="tab:red", linewidths=0.8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        sub = (subtitles or {}).get(title)
        ax.set_title(title + (f"\n{sub}" if sub else ""), fontsize=9)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def image_grid(
    x: torch.Tensor, *, output_range: str = "[-1,1]", nrow: int | None = None, padding: int = 2
) -> np.ndarray:
    """Tile images (N, C, H, W) into one uint8 array (H', W', C)."""
    x = x.detach().float().cpu()
    if output_range == "[-1,1]":
        x = (x + 1) / 2
    x = x.clamp(0, 1)
    n, c, h, w = x.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol = int(math.ceil(n / nrow))
    grid = torch.ones(c, ncol * (h + padding) + padding, nrow * (w + padding) + padding)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[
            :,
            padding + r * (h + padding) : padding + r * (h + padding) + h,
            padding + q * (w + padding) : padding + q * (w + padding) + w,
        ] = x[i]
    arr = (grid * 255).round().byte().permute(1, 2, 0).numpy()
    return arr[:, :, 0] if c == 1 else arr


def save_image_grid(
    path: str | os.PathLike, x: torch.Tensor, *, output_range: str = "[-1,1]", nrow: int | None = None
) -> None:
    from PIL import Image

    arr = image_grid(x, output_range=output_range, nrow=nrow)
    with atomic_write(path) as f:
        Image.fromarray(arr).save(f, format="PNG")
