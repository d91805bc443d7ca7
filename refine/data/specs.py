"""Image dataset specs: ``NAME:ROOT``, the names refine reads and what each ROOT must hold."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = ["IMAGE_DATASETS", "IMAGE_EXTENSIONS", "SPLITS", "DataSpec", "is_image_spec", "parse_data_spec"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

#: Dataset names accepted in a ``NAME:ROOT`` spec, with what ROOT must hold.
IMAGE_DATASETS: dict[str, str] = {
    "mnist": "the four MNIST files (train-images-idx3-ubyte[.gz], ...) or torchvision's ROOT/MNIST/raw/",
    "fashion-mnist": "the four Fashion-MNIST files or torchvision's ROOT/FashionMNIST/raw/",
    "cifar10": "torchvision's CIFAR-10 python pickles in ROOT/cifar-10-batches-py/",
    "cifar10-jpg": "the CIFAR-10 JPEG zip, or the folder it was extracted to (train/<class>/*.jpg, test/<class>/*.jpg)",
    "folder": "a class-per-folder image tree (ROOT/<class>/<image>, optionally under ROOT/train and ROOT/test)",
}
_ALIASES = {
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "imagefolder": "folder",
    "cifar10jpg": "cifar10-jpg",
}
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``NAME:ROOT`` dataset spec."""

    name: str
    root: Path

    def __str__(self) -> str:
        return f"{self.name}:{self.root}"


def is_image_spec(spec: str | None) -> bool:
    """True if ``spec`` looks like ``NAME:ROOT`` with a known image dataset name."""
    if not spec or ":" not in spec:
        return False
    name = spec.split(":", 1)[0].strip().lower()
    return _ALIASES.get(name, name) in IMAGE_DATASETS


def parse_data_spec(spec: str) -> DataSpec:
    """``"mnist:/data/mnist"`` -> ``DataSpec("mnist", Path("/data/mnist"))``; unknown names are errors."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(
            f"image dataset spec {spec!r} is not NAME:ROOT (e.g. mnist:/data/mnist); names: {', '.join(IMAGE_DATASETS)}"
        )
    name, root = spec.split(":", 1)
    name = name.strip().lower()
    name = _ALIASES.get(name, name)
    if name not in IMAGE_DATASETS:
        raise ConfigError(f"unknown image dataset {name!r} in {spec!r}; valid names: {', '.join(IMAGE_DATASETS)}")
    root = root.strip()
    if not root:
        raise ConfigError(
            f"image dataset spec {spec!r} has no ROOT after the colon; expected {name}:ROOT with ROOT holding {IMAGE_DATASETS[name]}"
        )
    return DataSpec(name, Path(os.path.expanduser(root)))
