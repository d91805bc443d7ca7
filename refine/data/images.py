"""Image datasets from a local root; nothing is ever downloaded.

A dataset is named by a spec ``NAME:ROOT`` (the form ``--data`` takes on the CLI):

=====================  ==========================================================================
``mnist:ROOT``         MNIST. ``ROOT`` is either torchvision's layout (``ROOT/MNIST/raw/<files>``,
                       read by ``torchvision.datasets.MNIST(download=False)``) or any folder that
                       holds the four original files (``train-images-idx3-ubyte[.gz]``, ...), as
                       distributed; those are read directly with numpy (the idx format is tiny).
``fashion-mnist:ROOT`` Fashion-MNIST, same two layouts (``ROOT/FashionMNIST/raw/``).
``cifar10:ROOT``       CIFAR-10 as torchvision's python pickles: ``ROOT/cifar-10-batches-py/`` (or
                       that folder itself), read by ``torchvision.datasets.CIFAR10(download=False)``.
``cifar10-jpg:PATH``   CIFAR-10 as JPEG files in ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``.
                       ``PATH`` is the zip archive itself (read in place, no extraction needed),
                       the folder it was extracted to, or that folder's ``cifar10/`` subfolder.
``folder:PATH``        Any class-per-folder tree (``PATH/<class>/<image>``) through
                       ``torchvision.datasets.ImageFolder`` with PIL decoding. If ``PATH`` has
                       ``train/`` and ``test/`` subfolders, those are the two splits. A folder of
                       images without class subfolders loads as *unlabelled* (``labels`` is None).
=====================  ==========================================================================

Images are held in memory as ``uint8`` tensors ``(N, C, H, W)`` (MNIST: 47 MB, CIFAR-10: 150 MB);
:class:`ImageData` converts batches to float in ``[-1, 1]`` (the DCGAN convention). Resizing
(``image_size=``, bilinear with antialiasing) and channel conversion (``channels=``: gray to RGB by
repetition, RGB to gray by ITU-R 601 luma) happen once at load time.

Extracting the JPEG zip once (optional; reading the zip in place works too)::

    refine data extract /path/to/cifar10_jpg.zip /path/to/cifar10-jpg
    refine train --data cifar10-jpg:/path/to/cifar10-jpg ...

Specs are parsed in :mod:`refine.data.specs`; the file formats are read in :mod:`refine.data.readers`.

A missing or malformed root raises :class:`~refine.errors.DataError` with one line that says
what was expected where.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError, DataError
from .readers import extract_zip, read_dataset, read_idx
from .specs import IMAGE_DATASETS, SPLITS, DataSpec, is_image_spec, parse_data_spec

__all__ = [
    "IMAGE_DATASETS",
    "DataSpec",
    "ImageData",
    "ImageBatches",
    "parse_data_spec",
    "is_image_spec",
    "load_images",
    "extract_zip",
    "read_idx",
    "real_images_like",
    "SPLITS",
]


# --------------------------------------------------------------------------- the in-memory dataset
@dataclass
class ImageData:
    """Images as ``uint8 (N, C, H, W)`` with optional integer labels ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str] | None = None
    spec: str = ""
    split: str = "train"
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def num_classes(self) -> int | None:
        if self.labels is None:
            return None
        return len(self.classes) if self.classes else int(self.labels.max()) + 1

    def float(self, index=None, *, device=None) -> torch.Tensor:
        """Images (all, or ``index``) as float32 in ``[-1, 1]`` on ``device``."""
        x = self.images if index is None else self.images[index]
        return to_float(x.to(device) if device is not None else x)

    def subset(self, index) -> ImageData:
        idx = torch.as_tensor(index, dtype=torch.long)
        return ImageData(
            self.images[idx],
            None if self.labels is None else self.labels[idx],
            self.classes,
            self.spec,
            self.split,
            dict(self.info),
        )

    def random_split(self, n_first: int, *, rng: torch.Generator | None) -> tuple[ImageData, ImageData]:
        """Two disjoint random subsets: ``n_first`` images and the rest."""
        if not 0 <= n_first <= len(self):
            raise ConfigError(f"cannot take {n_first} of {len(self)} images")
        perm = torch.randperm(len(self), generator=rng, device=rng.device if rng is not None else "cpu").cpu()
        return self.subset(perm[:n_first]), self.subset(perm[n_first:])

    def describe(self) -> str:
        lab = f", {self.num_classes} classes" if self.labels is not None else ", unlabelled"
        src = self.info.get("converted_from")
        conv = f" (converted from {src} to match the generator)" if src else ""
        return f"{self.spec} [{self.split}]: {len(self)} images {self.channels}x{self.image_size}x{self.image_size}{conv}{lab}"


def to_float(x: torch.Tensor) -> torch.Tensor:
    """``uint8`` in [0, 255] -> float32 in [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


class ImageBatches:
    """Shuffled float batches in ``[-1, 1]`` for :func:`refine.train.fit`: an iterable with a length.

    Each pass draws a fresh permutation from ``rng``; the last incomplete batch is dropped.
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        *,
        rng: torch.Generator | None = None,
        device=None,
        with_labels: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ConfigError(f"batch size must be positive, got {batch_size}")
        if len(data) < batch_size:
            raise ConfigError(f"the dataset has {len(data)} images, fewer than one batch of {batch_size}")
        if with_labels and data.labels is None:
            raise DataError(f"{data.spec} has no labels")
        self.data, self.batch_size, self.rng, self.device, self.with_labels = data, batch_size, rng, device, with_labels

    def __len__(self) -> int:
        return len(self.data) // self.batch_size

    def __iter__(self) -> Iterator:
        rng = self.rng
        perm = torch.randperm(len(self.data), generator=rng, device=rng.device if rng is not None else "cpu").cpu()
        for i in range(len(self)):
            idx = perm[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.data.float(idx, device=self.device)
            if self.with_labels:
                yield x, self.data.labels[idx].to(self.device)
            else:
                yield x


# --------------------------------------------------------------------------- conversion and the entry point
def convert_images(images: torch.Tensor, *, image_size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """Resize (bilinear, antialiased) and convert channels of a ``uint8 (N, C, H, W)`` batch."""
    if channels is not None and channels != images.shape[1]:
        if channels == 3 and images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        elif channels == 1 and images.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).byte()
        else:
            raise ConfigError(f"cannot convert {images.shape[1]}-channel images to {channels} channels; use 1 or 3")
    if image_size is not None and (images.shape[-1] != image_size or images.shape[-2] != image_size):
        out = []
        for i in range(0, len(images), 4096):
            r = torch.nn.functional.interpolate(
                images[i : i + 4096].float(),
                size=(image_size, image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            out.append(r.round().clamp(0, 255).byte())
        images = torch.cat(out) if out else images.new_zeros((0, images.shape[1], image_size, image_size))
    return images.contiguous()


def load_images(
    spec: str | DataSpec,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    limit: int | None = None,
    rng: torch.Generator | None = None,
    progress: bool = False,
) -> ImageData:
    """Load split ``train`` or ``test`` of an image dataset into memory.

    ``limit`` keeps a random subset of that many images (drawn with ``rng``; file-based
    datasets then decode only those), kept in the dataset's order (a class-per-folder tree
    stays sorted by class: shuffle before showing the first few). ``image_size``/``channels``
    convert at load time.
    """
    ds = parse_data_spec(spec) if isinstance(spec, str) else spec
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if limit is not None and limit <= 0:
        raise ConfigError(f"limit must be positive, got {limit}")
    if image_size is not None and image_size <= 0:
        raise ConfigError(f"image size must be positive, got {image_size}")
    images, labels, classes, info = read_dataset(
        ds, split, progress=progress, resize_to=image_size, limit=limit, rng=rng
    )
    before = tuple(int(v) for v in images.shape[1:])
    images = convert_images(images, image_size=image_size, channels=channels)
    if before != tuple(int(v) for v in images.shape[1:]):  # say so wherever the data are described
        info = {**info, "converted_from": "x".join(map(str, before))}
    if len(images) == 0:
        raise DataError(f"{ds} [{split}] holds no images")
    return ImageData(images, labels, classes, str(ds), split, info)


def real_images_like(
    spec: str, shape: Sequence[int], n: int, *, split: str = "test", rng: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """``n`` real images of ``spec`` as float ``[-1, 1]`` with a generator's sample ``shape`` ``(C, H, W)``.

    A random subset of the split (held out from training by default), e.g. to start MH chains
    at real images. Fewer than ``n`` images in the split is a DataError.
    """
    c, h, w = (int(v) for v in shape)
    if h != w:
        raise ConfigError(f"image datasets are square; the generator makes {h}x{w} images")
    data = load_images(spec, split=split, image_size=h, channels=c, limit=n, rng=rng)
    if len(data) < n:
        raise DataError(
            f"{spec} [{split}] holds {len(data)} images, fewer than the {n} requested; ask for fewer samples"
        )
    return data.float(device=device)
