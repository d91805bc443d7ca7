"""Output folders written as one set, and sample files written in chunks.

:class:`RunFolder` is how a command writes its results (``samples.npz``, pictures,
``run.json``) into ``--out``:

* **One writer at a time.** Entering it takes an exclusive lock on the folder (``flock`` on
  the folder itself, so no lock file is left behind); a second run into the same folder
  is refused with one line while the first holds it.
* **Staged, then put in place together.** Files are written into a hidden staging folder
  inside ``--out`` (same filesystem, so the final moves are renames). :meth:`RunFolder.commit`
  removes the old record first, renames every new file into place, removes files of the
  previous set that the new one lacks, and writes the record last. A run that fails before
  :meth:`~RunFolder.commit` leaves the folder exactly as it was; at any moment, a folder
  with a record holds the complete set that record describes.

:class:`NpzWriter` writes arrays whose shapes are known ahead into an ``.npz`` chunk by
chunk, so that drawing 10^8 samples never holds more than one chunk in memory. The file
is an ordinary ``.npz`` (stored, zip64 where needed) that ``numpy.load`` reads.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .eval.images import to_uint8
from .fs import format_bytes, write_json

__all__ = [
    "RunFolder",
    "NpzWriter",
    "Uint8NpzWriter",
    "PngFolderWriter",
    "SAMPLE_FORMATS",
    "check_disk_space",
    "remove_if_unused",
]

#: What ``refine sample --format`` writes: ``npz`` (float ``x`` and ``z`` as drawn), ``npz-uint8``
#: (the ADM/EDM convention: ``arr_0``, NHWC ``uint8``), ``png`` (a folder, one file per sample).
SAMPLE_FORMATS = ("npz", "npz-uint8", "png")

_STAGING_PREFIX = ".staging-"


def check_disk_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """A one-line ConfigError when ``folder``'s filesystem has less than ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ConfigError(
            f"{what} take about {format_bytes(needed)} on disk and {folder} has {format_bytes(free)} free; "
            "lower -n or write to a larger disk"
        )


class _Lock:
    """An exclusive, non-blocking lock on a folder: ``flock`` on the folder's own descriptor."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None
        self._fallback = None

    def acquire(self) -> None:
        busy = ConfigError(
            f"--out {self.folder} is being written by another refine run; wait for it to finish or choose another folder"
        )
        try:
            import fcntl
        except ImportError:  # no flock (Windows): a lock file from filelock
            from filelock import FileLock, Timeout

            self._fallback = FileLock(str(self.folder / ".refine.lock"))
            try:
                self._fallback.acquire(timeout=0)
            except Timeout:
                raise busy from None
            return
        for attempt in range(5):
            try:
                fd = os.open(self.folder, os.O_RDONLY)
                break
            except FileNotFoundError:
                # another run that made the folder failed and removed it, empty, between our check and
                # this lock (see remove_if_unused): make it again
                if attempt == 4:
                    raise
                self.folder.mkdir(parents=True, exist_ok=True)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise busy from None
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        if self._fallback is not None:
            self._fallback.release()
            self._fallback = None


def remove_if_unused(folder: Path) -> bool:
    """Remove the empty ``folder`` unless another run holds its lock; True if it is gone.

    A failed command removes the output folders it made; several runs started at once into a new
    folder share the one that the first made, and a run refused as busy must not pull it away from
    the run that holds it. A run that has not locked it yet makes it again (see ``_Lock``).
    """
    if not folder.exists():
        return True
    lock = _Lock(folder)
    try:
        lock.acquire()
    except (ConfigError, OSError):  # held by another run, or not ours to open
        return False
    try:
        folder.rmdir()
    except FileNotFoundError:
        return True
    except OSError:  # not empty (without flock, the lock file itself keeps it)
        return False
    finally:
        lock.release()
    return True


class RunFolder:
    """Lock ``out``, stage files in it, and put them in place together with the record last.

    Use as a context manager; ask :meth:`path` for where to write each file (the staging
    folder is made on the first call, so a run that fails its checks writes nothing), and
    finish with :meth:`commit`. Leaving the block without a commit discards the staged
    files; the lock is released either way.
    """

    def __init__(self, out: str | os.PathLike, *, record: str = "run.json") -> None:
        self.out = Path(out)
        self.record = record
        self._lock = _Lock(self.out)
        self._staging: Path | None = None
        self.committed = False

    def __enter__(self) -> RunFolder:
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)
                self._staging = None
        finally:
            self._lock.release()

    @property
    def staging(self) -> Path:
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.out))
        return self._staging

    def path(self, name: str) -> Path:
        """Where to write the set's file ``name`` (a plain name, no folders)."""
        if not name or Path(name).name != name or name.startswith(".") or name == self.record:
            raise ValueError(f"not a file name of the set: {name!r}")
        return self.staging / name

    def _previous_files(self) -> list[str]:
        try:
            with open(self.out / self.record) as f:
                listed = json.load(f).get("files", [])
        except (OSError, ValueError, AttributeError):
            return []
        return [
            n
            for n in listed
            if isinstance(n, str) and n and Path(n).name == n and not n.startswith(".") and n != self.record
        ]

    def commit(self, record: dict[str, Any]) -> list[str]:
        """Put the staged files in place and write ``record`` (with ``"files"``: their names) last."""
        staging = self.staging
        names = sorted(p.name for p in staging.iterdir())
        write_json({**record, "files": names}, staging / self.record)
        previous = self._previous_files()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.out / self.record)  # from here until the last rename the folder claims no complete set
        trash = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.out))
        try:
            for name in names:
                dest = self.out / name
                if dest.is_dir() and not dest.is_symlink():
                    os.replace(dest, trash / name)  # a folder (e.g. of PNG files) is swapped, not merged
                os.replace(staging / name, dest)
            for name in set(previous) - set(names):
                stale = self.out / name
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(stale)
            os.replace(staging / self.record, self.out / self.record)
        finally:
            shutil.rmtree(trash, ignore_errors=True)
        _fsync_dir(self.out)
        for left in self.out.glob(
            _STAGING_PREFIX + "*"
        ):  # staging of runs killed before their commit (we hold the lock)
            if left != staging:
                shutil.rmtree(left, ignore_errors=True)
        self.committed = True
        return names


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class NpzWriter:
    """Write ``n`` rows of each array into an ``.npz``, one chunk at a time.

    The arrays and their row shapes are taken from the first chunk; every later chunk must
    carry the same arrays. The first array is written straight into the archive; the others
    are spooled to files beside it and copied in at :meth:`close`, since a zip member must be
    written whole before the next begins. Memory use is one chunk, whatever ``n``.
    """

    def __init__(self, path: str | os.PathLike, n: int, *, dtype=np.float32, dtypes: dict | None = None) -> None:
        self.path = Path(path)
        self.n = int(n)
        self.dtype = np.dtype(dtype)
        self.dtypes = {k: np.dtype(v) for k, v in (dtypes or {}).items()}  # per array, where not ``dtype``
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, Any] = {}
        self._rows: dict[str, int] = {}
        self._spool: dict[str, Path] = {}
        self._order: list[str] = []

    def _header(self, f, row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        np.lib.format.write_array_header_1_0(
            f,
            {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (self.n, *row_shape)},
        )

    def _open(self, chunk: dict[str, np.ndarray]) -> None:
        self._zip = zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        for i, (name, a) in enumerate(chunk.items()):
            self._order.append(name)
            self._rows[name] = 0
            if i == 0:
                f = self._zip.open(f"{name}.npy", "w", force_zip64=True)
            else:
                self._spool[name] = self.path.with_name(f".{self.path.name}.{name}.npy")
                f = open(self._spool[name], "wb")
            self._header(f, tuple(a.shape[1:]), a.dtype)
            self._members[name] = (f, tuple(a.shape[1:]))

    def write(self, **chunk: np.ndarray) -> None:
        arrays = {k: np.ascontiguousarray(v, dtype=self.dtypes.get(k, self.dtype)) for k, v in chunk.items()}
        if self._zip is None:
            self._open(arrays)
        if list(arrays) != self._order:
            raise ValueError(f"chunk arrays {list(arrays)} differ from the first chunk's {self._order}")
        for name, a in arrays.items():
            f, row_shape = self._members[name]
            if tuple(a.shape[1:]) != row_shape:
                raise ValueError(f"{name}: rows of shape {a.shape[1:]}, the first chunk's were {row_shape}")
            if self._rows[name] + len(a) > self.n:
                raise ValueError(f"{name}: more than the declared {self.n} rows")
            f.write(a.reshape(-1).view(np.uint8))
            self._rows[name] += len(a)

    def close(self) -> None:
        if self._zip is None:
            raise ValueError("no rows were written")
        short = {k: r for k, r in self._rows.items() if r != self.n}
        if short:
            raise ValueError(f"rows written {short}, declared {self.n}")
        for name in self._order:
            f, _ = self._members[name]
            f.close()
            if name in self._spool:
                with open(self._spool[name], "rb") as src, self._zip.open(f"{name}.npy", "w", force_zip64=True) as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
                os.unlink(self._spool[name])
        self._zip.close()
        self._zip = None

    def abort(self) -> None:
        for f, _ in self._members.values():
            with contextlib.suppress(Exception):
                f.close()
        if self._zip is not None:
            with contextlib.suppress(Exception):
                self._zip.close()
        for p in [*self._spool.values(), self.path]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _nhwc_uint8(x: np.ndarray, output_range: str) -> np.ndarray:
    """Float images ``(N, C, H, W)`` in ``output_range`` -> ``uint8 (N, H, W, C)``, rounded as
    ``refine eval`` rounds them (:func:`refine.eval.to_uint8`)."""
    import torch

    return to_uint8(torch.from_numpy(np.asarray(x)), output_range).permute(0, 2, 3, 1).contiguous().numpy()


class Uint8NpzWriter:
    """Image samples as the ADM/EDM evaluators read them: one ``.npz`` whose ``arr_0`` is
    ``uint8 (N, H, W, C)``, streamed chunk by chunk through :class:`NpzWriter`.

    ``write(x=...)`` takes float ``(N, C, H, W)`` images in ``output_range``; other arrays
    of the chunk (the latents ``z``) are not part of this format and are dropped, except the
    class labels ``y``, which become ``arr_1`` (int64), as ADM's class-conditional samples have them.
    """

    def __init__(self, path: str | os.PathLike, n: int, *, output_range: str) -> None:
        self.path = Path(path)
        self.output_range = output_range
        self._npz = NpzWriter(path, n, dtype=np.uint8, dtypes={"arr_1": np.int64})

    def write(self, **chunk: np.ndarray) -> None:
        arrays = {"arr_0": _nhwc_uint8(chunk["x"], self.output_range)}
        if "y" in chunk:
            arrays["arr_1"] = np.asarray(chunk["y"])
        self._npz.write(**arrays)

    def close(self) -> None:
        self._npz.close()

    def abort(self) -> None:
        self._npz.abort()

    def __enter__(self) -> Uint8NpzWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


class PngFolderWriter:
    """Image samples as a folder of PNG files, ``000000.png``, ``000001.png``, ... in drawing
    order (what pytorch-fid, clean-fid and torch-fidelity read), one chunk at a time.

    ``write(x=...)`` takes float ``(N, C, H, W)`` images in ``output_range`` with 1 (grey) or
    3 (RGB) channels; ``z`` is dropped. The names are zero-padded to at least six digits, so
    sorting them by name is sorting them by index. With class labels (``write(x=..., y=...)``)
    each image goes into the subfolder of its class, ``3/000012.png`` (torchvision's
    ``ImageFolder`` layout), the index still counting over all samples.
    """

    def __init__(self, folder: str | os.PathLike, n: int, *, output_range: str) -> None:
        self.folder = Path(folder)
        self.n = int(n)
        self.output_range = output_range
        self.width = max(6, len(str(max(self.n - 1, 0))))
        self._rows = 0

    def write(self, **chunk: np.ndarray) -> None:
        from PIL import Image

        images = _nhwc_uint8(chunk["x"], self.output_range)
        if images.shape[-1] not in (1, 3):
            raise ValueError(f"PNG samples need 1 or 3 channels, the chunk has {images.shape[-1]}")
        if self._rows + len(images) > self.n:
            raise ValueError(f"more than the declared {self.n} samples")
        labels = None if "y" not in chunk else np.asarray(chunk["y"]).astype(np.int64)
        self.folder.mkdir(exist_ok=True)
        for c in () if labels is None else np.unique(labels):  # the class subfolders, once per chunk
            (self.folder / str(int(c))).mkdir(exist_ok=True)
        for i, im in enumerate(images):
            where = self.folder if labels is None else self.folder / str(int(labels[i]))
            Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(where / f"{self._rows:0{self.width}d}.png")
            self._rows += 1

    def close(self) -> None:
        if self._rows != self.n:
            raise ValueError(f"samples written {self._rows}, declared {self.n}")

    def abort(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PngFolderWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def write_chunks(path: str | os.PathLike, n: int, chunks: Iterable[dict[str, np.ndarray]]) -> None:
    """Write an iterable of ``{name: rows}`` chunks, ``n`` rows in all, into the ``.npz`` at ``path``."""
    with NpzWriter(path, n) as w:
        for chunk in chunks:
            w.write(**chunk)
