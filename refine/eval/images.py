"""8-bit images: float samples rounded as a PNG stores them, and samples read from files or folders.

Every image that is scored (real or generated) becomes ``uint8 (N, C, H, W)`` first, so that a
folder of PNG files and the tensor it was written from score the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.images import load_images
from ..errors import ConfigError, DataError, NonFiniteError, ShapeError
from ..fs import read_npz
from ..generator import RANGE_BOUNDS

__all__ = ["SAMPLE_RANGES", "IMAGE_RANGES", "to_uint8", "check_uint8", "load_image_samples"]

#: Value ranges float images may be declared in (:func:`to_uint8`).
IMAGE_RANGES = ("[-1,1]", "[0,1]", "[0,255]")
#: Value ranges a samples file may declare; ``auto`` infers one from the values (see :func:`load_image_samples`).
SAMPLE_RANGES = ("auto", *IMAGE_RANGES)


def check_uint8(images: Any, what: str) -> None:
    """``images`` must be 8-bit images ``uint8 (N, C, H, W)``; anything else is a :class:`ShapeError` naming ``what``."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        found = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ShapeError(
            f"{what} must be 8-bit images uint8 (N, C, H, W); got {found} (convert with refine.eval.to_uint8)"
        )


def to_uint8(x: torch.Tensor, output_range: str) -> torch.Tensor:
    """Float images in ``output_range`` (``[-1,1]``, ``[0,1]`` or ``[0,255]``) -> ``uint8`` on the CPU, rounded as a PNG stores them.

    Values beyond the declared range by more than 1% of its width are an error (the range was
    probably declared wrongly); smaller excursions are clipped.
    """
    if output_range not in IMAGE_RANGES:
        raise ConfigError(
            f"images need a declared value range ({', '.join(IMAGE_RANGES)}), got {output_range!r}; "
            "declare the generator's output range (e.g. --output-range [-1,1])"
        )
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ShapeError(
            f"images must be (N, C, H, W); got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    if x.dtype == torch.uint8:
        return x.cpu()
    x = x.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise NonFiniteError("images contain NaN or inf; check the generator")
    lo, hi = RANGE_BOUNDS[output_range]
    if x.numel():
        found_lo, found_hi = float(x.amin()), float(x.amax())
        tol = 0.01 * (hi - lo)
        if found_lo < lo - tol or found_hi > hi + tol:
            raise ConfigError(
                f"images have values in [{found_lo:.4g}, {found_hi:.4g}] but the range {output_range} was declared; "
                "declare the range they are in"
            )
    return ((x - lo) * (255.0 / (hi - lo))).round_().clamp_(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- samples from files
def _infer_range(x: np.ndarray) -> str:
    if x.size == 0:
        return "[0,1]"
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    if hi > 1.0 + 1e-3:
        return "[0,255]"
    if lo < -1e-3:
        return "[-1,1]"
    return "[0,1]"


def _as_nchw(a: np.ndarray, path: Path) -> np.ndarray:
    if a.ndim == 3:
        return a[:, None]
    if a.ndim != 4:
        raise ShapeError(f"{path}: expected images (N, C, H, W) or (N, H, W, C); found an array of shape {a.shape}")
    if a.shape[1] in (1, 3):
        return a
    if a.shape[3] in (1, 3):
        return np.ascontiguousarray(a.transpose(0, 3, 1, 2))
    raise ShapeError(
        f"{path}: expected images with 1 or 3 channels, (N, C, H, W) or (N, H, W, C); found shape {a.shape}"
    )


def load_image_samples(
    path: str | os.PathLike, *, value_range: str = "auto", progress: bool = False
) -> tuple[torch.Tensor, dict]:
    """8-bit images ``uint8 (N, C, H, W)`` from an ``.npz`` file or a folder of image files, and how they were read.

    - a folder: every PNG/JPEG/... file in it (or in its class subfolders), decoded with PIL;
    - an ``.npz``: the array ``x`` (as ``refine sample`` writes it), ``arr_0`` (the ADM/EDM convention,
      ``refine sample --format npz-uint8``), or the file's only array,
      as ``(N, C, H, W)``, ``(N, H, W, C)`` or ``(N, H, W)``. ``uint8`` arrays are taken as they
      are; float arrays are in ``value_range``, which ``auto`` infers: values above 1 mean
      ``[0,255]``, negative values ``[-1,1]``, otherwise ``[0,1]``.
    """
    p = Path(path)
    if value_range not in SAMPLE_RANGES:
        raise ConfigError(f"unknown samples value range {value_range!r}; valid: {', '.join(SAMPLE_RANGES)}")
    if p.is_dir():
        data = load_images(f"folder:{p}", split="train", progress=progress)
        return data.images, {"path": str(p), "kind": "folder", "n": len(data), "value_range": "[0,255]"}
    arrays = read_npz(p, "samples", finite=False)  # regular file, headers checked against bytes, no objects
    names = list(arrays)
    if "x" in names:
        name = "x"
    elif "arr_0" in names:  # the ADM/EDM convention (refine sample --format npz-uint8): arr_0 NHWC uint8, arr_1 labels
        name = "arr_0"
    elif len(names) == 1:
        name = names[0]
    else:
        raise DataError(
            f"{p} has no array 'x' or 'arr_0' and several others ({', '.join(names)}); store the images as x"
        )
    a = arrays[name]
    a = _as_nchw(a, p)
    if a.dtype == np.uint8:
        rng_used = "[0,255]"
        x = torch.from_numpy(np.ascontiguousarray(a))
    else:
        if not np.issubdtype(a.dtype, np.number):
            raise DataError(f"{p}: array {name} has dtype {a.dtype}; expected numbers")
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise NonFiniteError(f"{p}: array {name} contains NaN or inf")
        rng_used = _infer_range(a) if value_range == "auto" else value_range
        x = to_uint8(torch.from_numpy(a), rng_used)
    return x, {
        "path": str(p),
        "kind": "npz",
        "array": name,
        "n": int(len(x)),
        "value_range": rng_used,
        "value_range_source": "uint8" if a.dtype == np.uint8 else ("inferred" if value_range == "auto" else "declared"),
    }
