"""Reading files a user names, without trusting them: regular files only, sizes checked
against what the machine can hold, array headers checked against the bytes behind them.

This is the lowest layer of refine's file handling (it imports only :mod:`refine.errors`):
checkpoint loaders, sample-file readers and image datasets go through it, so that a
device (``/dev/zero``), a FIFO, a file larger than memory or an ``.npz`` whose header
declares more rows than it holds is one clear error before anything is read.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from .errors import CheckpointError, DataError, NonFiniteError, RefineError

__all__ = [
    "available_memory",
    "check_regular_file",
    "read_regular_file",
    "read_npz",
    "check_finite_array",
    "format_bytes",
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
