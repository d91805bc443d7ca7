"""The file system, without trusting it.

Reading: regular files only (not a device, a FIFO or a folder), sizes checked against what
the machine can hold, ``.npz`` headers checked against the bytes behind them. Writing: every
file goes to a temporary name in its destination folder and is renamed into place, so a
failed run never leaves a half-written file where a good one was.

This is the bottom layer of refine's file handling (it imports only :mod:`refine.errors`):
checkpoint loaders (:mod:`refine.io`), sample-file readers, image datasets, feature networks
and run folders all go through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError, DataError, NonFiniteError, RefineError

__all__ = [
    "available_memory",
    "check_regular_file",
    "read_regular_file",
    "read_npz",
    "check_finite_array",
    "format_bytes",
    "atomic_write",
    "atomic_save",
    "write_json",
    "json_default",
    "plain",
    "file_sha256",
]


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KB"`` (powers of 1024)."""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def available_memory() -> int:
    """Bytes of memory this process can still take: ``MemAvailable`` where Linux reports it,
    else the physical memory (a cgroup limit, where one is set and lower, wins)."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            avail = 8 << 30
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            avail = min(avail, int(text))
    return int(avail)


def check_regular_file(
    path: str | os.PathLike, what: str, *, error: type[RefineError] = CheckpointError, max_bytes: int | None = None
) -> int:
    """The size of ``path`` if it is a non-empty regular file (symlinks followed) that fits in
    ``max_bytes`` (default: half the memory available); else one-line ``error``."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(f"{what} {p} does not exist") from None
    except OSError as e:
        raise error(f"{what} {p} cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {p} is a directory, expected a file")
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a character device"
            if stat.S_ISCHR(st.st_mode)
            else "a block device"
            if stat.S_ISBLK(st.st_mode)
            else "a pipe"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "not a regular file"
        )
        raise error(f"{what} {p} is {kind}; refine reads only regular files")
    if st.st_size == 0:
        raise error(f"{what} {p} is empty")
    limit = available_memory() // 2 if max_bytes is None else max_bytes
    if st.st_size > limit:
        raise error(
            f"{what} {p} is {format_bytes(st.st_size)}, more than refine will read into memory here ({format_bytes(limit)})"
        )
    return int(st.st_size)


def read_regular_file(
    path: str | os.PathLike, what: str, *, error: type[RefineError] = CheckpointError, max_bytes: int | None = None
) -> bytes:
    """All bytes of a regular file checked by :func:`check_regular_file`."""
    size = check_regular_file(path, what, error=error, max_bytes=max_bytes)
    with open(path, "rb") as f:
        data = f.read(size + 1)
    if len(data) != size:
        raise error(f"{what} {path} changed size while it was read")
    return data


def _npy_header(fp) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` member at ``fp``."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version in ((2, 0), (3, 0)):
        return np.lib.format.read_array_header_2_0(fp)
    raise ValueError(f"unsupported .npy version {version}")


def read_npz(
    path: str | os.PathLike, what: str = "sample file", *, keys: tuple[str, ...] | None = None, finite: bool = True
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, read with ``allow_pickle=False`` after checking each member's
    header: a plain numeric dtype (no objects), and a declared size that the member's bytes hold.

    ``keys``: read only these members (each must exist). ``finite``: floating arrays must hold no
    NaN or inf (a :class:`NonFiniteError` naming the array and how many entries).
    """
    check_regular_file(path, what, error=DataError)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as e:
        raise DataError(
            f"{what} {path} is not an .npz archive ({(str(e).splitlines() or [type(e).__name__])[0][:120]}); write it with numpy.savez"
        ) from None
    out: dict[str, np.ndarray] = {}
    with zf:
        members = {info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")}
        if not members:
            raise DataError(f"{what} {path} holds no arrays")
        names = list(keys) if keys is not None else list(members)
        for name in names:
            if name not in members:
                raise DataError(f"{what} {path} has no array {name!r} (found: {', '.join(members)})")
            info = members[name]
            try:
                with zf.open(info) as fp:
                    shape, fortran, dtype = _npy_header(fp)
                    if dtype.hasobject or dtype.kind not in "biufc":
                        raise DataError(f"{what} {path}: array {name!r} has dtype {dtype}, expected numbers")
                    count = int(np.prod(shape, dtype=object)) if shape else 1
                    need = count * dtype.itemsize
                    have = info.file_size - fp.tell()
                    if need > have:
                        raise DataError(
                            f"{what} {path}: array {name!r} declares shape {shape} ({format_bytes(need)}) but holds {format_bytes(max(have, 0))}; the file is truncated or forged"
                        )
                    limit = available_memory() // 2
                    if need > limit:
                        raise DataError(
                            f"{what} {path}: array {name!r} of shape {shape} needs {format_bytes(need)}, more than fits in memory here ({format_bytes(limit)})"
                        )
                    buf = fp.read(need)
                    if len(buf) != need:
                        raise DataError(f"{what} {path}: array {name!r} is truncated")
                    arr = np.frombuffer(buf, dtype=dtype, count=count)
                    arr = arr.reshape(shape, order="F" if fortran else "C").copy()
            except RefineError:
                raise
            except (
                ValueError,
                OSError,
                zipfile.BadZipFile,
                EOFError,
                RuntimeError,
                NotImplementedError,
                SyntaxError,
                KeyError,
            ) as e:
                raise DataError(
                    f"{what} {path}: array {name!r} cannot be read ({(str(e).splitlines() or [type(e).__name__])[0][:160]})"
                ) from None
            if finite:
                check_finite_array(arr, f"{what} {path}: array {name!r}")
            out[name] = arr
    return out


def check_finite_array(arr: np.ndarray, what: str) -> None:
    """A :class:`NonFiniteError` if a floating array holds NaN or inf."""
    if arr.dtype.kind in "fc":
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise NonFiniteError(
                f"{what} holds {bad} NaN or inf value(s) of {arr.size}; refine scores only finite samples"
            )


# --------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Open a temporary file next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CheckpointError(f"cannot write {path}: it is a folder; give a file name inside it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; outputs get ordinary permissions
    except OSError as e:
        raise CheckpointError(
            f"cannot write to {folder}: {e.strerror or e}; choose a writable output location"
        ) from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """``obj`` as indented JSON through :func:`atomic_write` (tensors and numbers as plain values)."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=json_default)
        f.write("\n")


def json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, (Path, torch.device, torch.dtype)):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def plain(obj: Any) -> Any:
    """Recursively turn ``obj`` into plain values (dict/list/str/int/float/bool/None, tensors kept),
    so that what refine writes loads with ``weights_only=True``."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint; use plain values")
