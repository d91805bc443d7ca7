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

    python -m refine.data.images extract /path/to/cifar10_jpg.zip /path/to/cifar10-jpg
    refine train --data cifar10-jpg:/path/to/cifar10-jpg ...

A missing or malformed root raises :class:`~refine.errors.DataError` with one line that says
what was expected where.
"""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError

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
]

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


# --------------------------------------------------------------------------- specs
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


# --------------------------------------------------------------------------- idx files (MNIST family)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (``.gz`` or plain), the format of the MNIST family."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(
            f"{path} cannot be read ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}); expected an idx file as distributed with MNIST"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path} is not an idx file (bad magic number); expected e.g. train-images-idx3-ubyte as distributed with MNIST"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (no room for its {ndim} dimensions)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != need:
        raise DataError(
            f"{path} holds {len(raw) - header} bytes of data, its header {dims} needs {need}; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TV_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


def _find_file(folder: Path, base: str) -> Path | None:
    for name in (base, base + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _load_mnist_family(spec: DataSpec, split: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    root = spec.root
    if not root.is_dir():
        raise DataError(
            f"{spec.name} root {root} is not a folder; expected a folder holding {IMAGE_DATASETS[spec.name]}"
        )
    tv_raw = root / _TV_FOLDER[spec.name] / "raw"
    img_name, lab_name = _MNIST_FILES[split]
    # torchvision's own layout (uncompressed files under ROOT/<Name>/raw): let torchvision read it.
    if (tv_raw / img_name).is_file() and (tv_raw / lab_name).is_file():
        from .. import _compat

        _compat.ensure_torchvision()
        from torchvision import datasets

        cls = datasets.MNIST if spec.name == "mnist" else datasets.FashionMNIST
        try:
            ds = cls(str(root), train=split == "train", download=False)
        except (RuntimeError, OSError, ValueError, AssertionError) as e:
            raise DataError(
                f"torchvision could not read {spec.name} from {tv_raw} ({str(e).splitlines()[0][:120]})"
            ) from None
        return ds.data.unsqueeze(1).contiguous(), ds.targets.long(), {"reader": "torchvision", "folder": str(tv_raw)}
    # The files as distributed (.gz or not), in ROOT/<Name>/raw, ROOT/raw or ROOT itself: read them here.
    for folder in (tv_raw, root / "raw", root):
        img, lab = _find_file(folder, img_name), _find_file(folder, lab_name)
        if img is not None and lab is not None:
            images, labels = read_idx(img), read_idx(lab)
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise DataError(
                    f"{img} and {lab} do not fit together: images {images.shape}, labels {labels.shape}; expected (N, 28, 28) and (N,)"
                )
            return (
                torch.from_numpy(images.copy()).unsqueeze(1),
                torch.from_numpy(labels.astype(np.int64)),
                {"reader": "idx", "folder": str(folder)},
            )
    raise DataError(
        f"{spec.name} root {root} holds no {img_name}[.gz] and {lab_name}[.gz] (looked in {root}, {root / 'raw'} and {tv_raw}); "
        f"point --data {spec.name}:ROOT at the folder with the original files"
    )


# --------------------------------------------------------------------------- CIFAR-10 pickles
def _load_cifar10(spec: DataSpec, split: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    root = spec.root
    if root.name == "cifar-10-batches-py" and root.is_dir():
        root = root.parent
    if not (root / "cifar-10-batches-py").is_dir():
        has_zip = root.is_file() or (root.is_dir() and any(root.glob("*.zip")))
        hint = " (for the CIFAR-10 JPEG archive use cifar10-jpg:PATH)" if has_zip else ""
        raise DataError(
            f"cifar10 root {spec.root} holds no cifar-10-batches-py/ folder; expected torchvision's CIFAR-10 python pickles there{hint}"
        )
    from .. import _compat

    _compat.ensure_torchvision()
    from torchvision import datasets

    try:
        ds = datasets.CIFAR10(str(root), train=split == "train", download=False)
    except (RuntimeError, OSError, ValueError, EOFError) as e:
        raise DataError(
            f"torchvision could not read CIFAR-10 from {root / 'cifar-10-batches-py'} ({str(e).splitlines()[0][:120]}); the files are missing or corrupt"
        ) from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(ds.targets, dtype=torch.long), {"reader": "torchvision", "classes": list(ds.classes)}


# --------------------------------------------------------------------------- image files (folders, zip)
def _decode(data_or_path, what: str) -> np.ndarray:
    """One image file as an ``(H, W)`` or ``(H, W, 3)`` uint8 array; anything larger than PIL's
    decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is refused before it is decoded."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        src = io.BytesIO(data_or_path) if isinstance(data_or_path, (bytes, bytearray)) else data_or_path
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                limit = Image.MAX_IMAGE_PIXELS
                if limit is not None and im.size[0] * im.size[1] > limit:
                    raise DataError(
                        f"{what} is {im.size[0]}x{im.size[1]} pixels, more than refine decodes ({limit} pixels: "
                        "a decompression bomb or not a dataset image)"
                    )
                im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
                im.load()
                return np.asarray(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{what} is refused as a decompression bomb ({str(e).splitlines()[0][:100]})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(
            f"{what} is not a readable image ({str(e).splitlines()[0][:100] if str(e) else type(e).__name__})"
        ) from None


def _stack(arrays: list[np.ndarray], where: str) -> torch.Tensor:
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1:
        raise DataError(
            f"images in {where} have different sizes ({', '.join(f'{h}x{w}' for h, w in sorted(shapes)[:4])}); pass an image size to resize them"
        )
    gray = all(a.ndim == 2 for a in arrays)
    arrays = [a if a.ndim == 3 else (a[:, :, None] if gray else np.repeat(a[:, :, None], 3, axis=2)) for a in arrays]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _decode_many(items, what, progress: bool, desc: str, resize_to: int | None) -> list[np.ndarray]:
    from tqdm.auto import tqdm

    out = []
    for item, name in tqdm(items, desc=desc, unit="img", disable=not progress, leave=False):
        a = _decode(item() if callable(item) else item, f"{what}{name}")
        if resize_to is not None and a.shape[:2] != (resize_to, resize_to):
            a = _resize_uint8(a, resize_to)
        out.append(a)
    return out


def _resize_uint8(a: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(a.copy())
    t = t[None, None].float() if t.dim() == 2 else t.permute(2, 0, 1)[None].float()
    r = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    r = r.round().clamp(0, 255).byte()[0]
    return r[0].numpy() if a.ndim == 2 else r.permute(1, 2, 0).numpy()


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _image_folder(
    folder: Path, what: str, progress: bool, resize_to: int | None, limit: int | None, rng
) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        from .. import _compat

        _compat.ensure_torchvision()
        from torchvision.datasets import ImageFolder

        try:
            ds = ImageFolder(str(folder), loader=lambda p: p, allow_empty=True)
        except (FileNotFoundError, OSError, RuntimeError) as e:
            raise DataError(f"{what}: {str(e).splitlines()[0][:160]}") from None
        samples = ds.samples
        if not samples:
            raise DataError(
                f"{what}: no image files ({', '.join(IMAGE_EXTENSIONS[:3])}, ...) under the class folders of {folder}"
            )
        classes: list[str] | None = list(ds.classes)
        paths = [p for p, _ in samples]
        labels = torch.tensor([c for _, c in samples], dtype=torch.long)
    else:
        paths = sorted(str(p) for p in folder.iterdir() if p.is_file() and _is_image(p.name))
        if not paths:
            raise DataError(
                f"{what}: {folder} holds neither class subfolders nor image files; expected ROOT/<class>/<image>"
            )
        labels, classes = None, None
    keep = _limit_index(len(paths), limit, rng)
    if keep is not None:
        paths = [paths[i] for i in keep]
        labels = None if labels is None else labels[keep]
    arrays = _decode_many(
        ((p, os.path.relpath(p, folder)) for p in paths), f"{what}: ", progress, f"reading {folder.name}", resize_to
    )
    return _stack(arrays, str(folder)), labels, classes


def _limit_index(n: int, limit: int | None, rng) -> torch.Tensor | None:
    if limit is None or limit >= n:
        return None
    perm = torch.randperm(n, generator=rng, device=rng.device if rng is not None else "cpu").cpu()
    return perm[:limit].sort().values


def _zip_split_members(zf: zipfile.ZipFile, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """``[(member, class index)]`` for ``.../<split>/<class>/<image>`` entries, and the sorted class names."""
    by_class: dict[str, list[str]] = {}
    for name in zf.namelist():
        parts = name.split("/")
        if len(parts) >= 3 and parts[-3] == split and _is_image(parts[-1]):
            by_class.setdefault(parts[-2], []).append(name)
    classes = sorted(by_class)
    return [(m, i) for i, c in enumerate(classes) for m in sorted(by_class[c])], classes


def _load_cifar10_jpg(spec: DataSpec, split: str, progress: bool, resize_to: int | None, limit: int | None, rng):
    path = spec.root
    if path.is_file():
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as e:
            raise DataError(
                f"cifar10-jpg path {path} is a file but not a readable zip archive ({str(e)[:100]}); expected the CIFAR-10 JPEG zip or its extracted folder"
            ) from None
        with zf:
            members, classes = _zip_split_members(zf, split)
            if not members:
                raise DataError(
                    f"zip {path} holds no {split}/<class>/*.jpg entries; expected the CIFAR-10 JPEG archive (cifar10/{split}/<class>/NNNN.jpg)"
                )
            keep = _limit_index(len(members), limit, rng)
            if keep is not None:
                members = [members[i] for i in keep]
            arrays = _decode_many(
                (((lambda m=m: zf.read(m)), m) for m, _ in members), f"{path}:", progress, f"reading {split}", resize_to
            )
        labels = torch.tensor([c for _, c in members], dtype=torch.long)
        return _stack(arrays, str(path)), labels, classes, {"reader": "zip", "path": str(path)}
    if not path.is_dir():
        raise DataError(
            f"cifar10-jpg path {path} does not exist; expected the CIFAR-10 JPEG zip or the folder it was extracted to"
        )
    for base in (path, path / "cifar10"):
        if (base / split).is_dir():
            images, labels, classes = _image_folder(
                base / split, f"cifar10-jpg {base / split}", progress, resize_to, limit, rng
            )
            return images, labels, classes, {"reader": "ImageFolder", "folder": str(base / split)}
    raise DataError(
        f"cifar10-jpg folder {path} has no {split}/ subfolder (nor cifar10/{split}/); expected {split}/<class>/*.jpg as in the extracted archive"
    )


def _load_folder(spec: DataSpec, split: str, progress: bool, resize_to: int | None, limit: int | None, rng):
    root = spec.root
    if not root.is_dir():
        raise DataError(f"folder root {root} is not a folder; expected {IMAGE_DATASETS['folder']}")
    if (root / "train").is_dir():
        folder = root / split
        if not folder.is_dir():
            raise DataError(
                f"folder root {root} has train/ but no {split}/ subfolder; add one or use the train split only"
            )
    elif split == "train":
        folder = root
    else:
        raise DataError(
            f"folder root {root} has no train/ and test/ subfolders, so it has no {split} split; hold out images from the train split instead"
        )
    images, labels, classes = _image_folder(folder, f"folder {folder}", progress, resize_to, limit, rng)
    return (
        images,
        labels,
        classes,
        {"reader": "ImageFolder" if labels is not None else "flat folder", "folder": str(folder)},
    )


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
    classes = None
    if ds.name in ("mnist", "fashion-mnist"):
        images, labels, info = _load_mnist_family(ds, split)
        classes = _CLASSES[ds.name]
    elif ds.name == "cifar10":
        images, labels, info = _load_cifar10(ds, split)
        classes = info.pop("classes")
    elif ds.name == "cifar10-jpg":
        images, labels, classes, info = _load_cifar10_jpg(ds, split, progress, image_size, limit, rng)
        limit = None
    else:
        images, labels, classes, info = _load_folder(ds, split, progress, image_size, limit, rng)
        limit = None
    keep = _limit_index(len(images), limit, rng)
    if keep is not None:
        images, labels = images[keep], None if labels is None else labels[keep]
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


# --------------------------------------------------------------------------- one-time extraction
def extract_zip(archive: str | os.PathLike, dest: str | os.PathLike, *, progress: bool = True) -> Path:
    """Extract ``archive`` into ``dest`` (created; must not exist yet), refusing unsafe member paths.

    Extraction goes to a temporary folder next to ``dest`` that is renamed into place at the
    end, so an interrupted run leaves no half-filled ``dest``.
    """
    import shutil
    import tempfile

    from tqdm.auto import tqdm

    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise DataError(f"{dest} already exists; choose a new destination folder")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{archive} is not a readable zip archive ({str(e)[:100]})") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with zf:
            members = zf.infolist()
            for m in members:
                target = (tmp / m.filename).resolve()
                if not str(target).startswith(str(tmp.resolve()) + os.sep) and target != tmp.resolve():
                    raise DataError(
                        f"{archive} member {m.filename!r} would be written outside {dest}; refusing to extract"
                    )
            for m in tqdm(members, desc="extracting", unit="file", disable=not progress, leave=False):
                zf.extract(m, tmp)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
