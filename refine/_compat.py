"""Make ``import torchvision`` work when its compiled operator library cannot load.

Some torchvision wheels are built against CUDA while the installed torch is a CPU
build (for example torchvision 0.28.0 from PyPI next to ``torch==2.13.0+cpu``).
Importing torchvision then fails with ``operator torchvision::nms does not exist``:
its compiled ``_C`` library cannot be loaded, and torchvision's Python side
registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms``, which
requires those operator *schemas* to exist.

:func:`ensure_torchvision` runs before anything in refine imports torchvision
(and so timm and pytorch-fid). It does nothing when torchvision is absent, already
imported, or when its compiled library loads normally. Only when that library
fails to load does it define the two schemas (no kernels) through
:mod:`torch.library`, so that the pure-Python parts of torchvision — datasets,
transforms, model definitions, ``utils.make_grid`` — import and work. Detection
ops such as ``torchvision.ops.nms`` stay unavailable (refine does not use them),
and ``torchvision.io`` image decoding does not work; refine reads images with PIL.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

import torch

__all__ = ["ensure_torchvision", "torchvision_status"]

# Schemas as torchvision declares them; only these two are needed for import.
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None  # kept alive: dropping it drops the schemas
_status: str | None = None


def _ops_defined() -> bool:
    return all(hasattr(torch.ops.torchvision, name) for name in _SCHEMAS)


def _load_native(package_dir: str) -> bool:
    """Try to load torchvision's compiled ops the way torchvision itself does."""
    for path in sorted(
        glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(os.path.join(package_dir, "_C*.pyd"))
    ):
        try:
            torch.ops.load_library(path)
            return True
        except (OSError, ImportError, RuntimeError):
            return False
    return False


def ensure_torchvision() -> str:
    """Prepare for ``import torchvision``; safe to call any number of times.

    Returns what was found: ``"absent"`` (not installed), ``"imported"`` (already
    imported, left alone), ``"native"`` (its compiled ops are available) or
    ``"shimmed"`` (the op schemas were defined here so that the Python parts import).
    """
    global _library, _status
    if _status is not None:
        return _status
    if "torchvision" in sys.modules:
        _status = "imported"
        return _status
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return "absent"  # not cached: it may be installed later in this process
    if _ops_defined() or _load_native(list(spec.submodule_search_locations)[0]):
        _status = "native"
        return _status
    _library = torch.library.Library("torchvision", "DEF")
    for name, schema in _SCHEMAS.items():
        if not hasattr(torch.ops.torchvision, name):
            _library.define(schema)
    _status = "shimmed"
    return _status


def torchvision_status() -> str | None:
    """What :func:`ensure_torchvision` found, or None if it has not run."""
    return _status
