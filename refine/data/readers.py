"""Readers for the image formats refine loads: idx files (the MNIST family), CIFAR-10's pickles,
image files in a class-per-folder tree or a zip archive (decoded with PIL), and a safe one-time
zip extraction. Each returns ``uint8 (N, C, H, W)`` images; :func:`refine.data.images.load_images`
is the entry point that picks one from a spec.
"""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .specs import IMAGE_DATASETS, IMAGE_EXTENSIONS, DataSpec

__all__ = ["read_dataset", "read_idx", "extract_zip"]


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


def read_dataset(
    ds: DataSpec, split: str, *, progress: bool, resize_to: int | None, limit: int | None, rng
) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None, dict]:
    """``(images, labels, classes, info)`` of one split of ``ds``; ``limit`` keeps a random subset
    drawn with ``rng`` (file-based datasets decode only those, resized to ``resize_to`` as they are read)."""
    if ds.name in ("mnist", "fashion-mnist"):
        images, labels, info = _load_mnist_family(ds, split)
        classes = _CLASSES[ds.name]
    elif ds.name == "cifar10":
        images, labels, info = _load_cifar10(ds, split)
        classes = info.pop("classes")
    elif ds.name == "cifar10-jpg":
        return _load_cifar10_jpg(ds, split, progress, resize_to, limit, rng)
    else:
        return _load_folder(ds, split, progress, resize_to, limit, rng)
    keep = _limit_index(len(images), limit, rng)
    if keep is not None:
        images, labels = images[keep], labels[keep]
    return images, labels, classes, info


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
