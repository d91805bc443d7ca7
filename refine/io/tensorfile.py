"""One file of tensors and plain values, in either of the two containers refine reads.

safetensors (written for a path ending in ``.safetensors``)
    The tensors under keys that say where they sit (``generator/state/net.0.weight``), and
    everything else (format tag, version, architecture configs, prior, calibration, meta) as
    one JSON string under the metadata key ``"refine"``, in which each tensor is the
    reference ``{"$tensor": "generator/state/net.0.weight"}``. Nothing in the file is code,
    and the configuration can be read without loading a tensor.
``torch.save`` (any other name; the format of refine before safetensors)
    Read with ``torch.load(weights_only=True)`` only.

The container is recognised from the file's first bytes, never from its name. Either way
:func:`read` returns the same nested dict of plain values and tensors, and every way a file
can be damaged or forged (truncation, flipped bytes, a header or JSON of the wrong shape,
references to tensors that are not there) is one :class:`~refine.errors.CheckpointError` line.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import CheckpointError, ConfigError
from ..fs import atomic_save, atomic_write, read_regular_file

__all__ = ["SAFETENSORS_SUFFIX", "METADATA_KEY", "TENSOR_REF", "write", "read", "sniff", "safetensors_header", "pack"]

SAFETENSORS_SUFFIX = ".safetensors"
#: The safetensors metadata key that holds refine's configuration (a JSON string).
METADATA_KEY = "refine"
#: How the JSON configuration names a tensor stored beside it.
TENSOR_REF = "$tensor"
#: Deeper nesting than any refine file has (a training state is about 6 levels deep).
_MAX_DEPTH = 32


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


# --------------------------------------------------------------------------- writing
def pack(obj: dict) -> bytes:
    """``obj`` (a dict of plain values and tensors, as :func:`refine.fs.plain` makes them) as safetensors bytes."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, where: list[str]) -> Any:
        if isinstance(value, torch.Tensor):
            key = "/".join(where)
            if key in tensors:
                raise ConfigError(f"two tensors would be stored under the name {key!r}; rename one of them")
            # a copy of its own: safetensors refuses tensors that share memory (tied or viewed weights)
            tensors[key] = value.detach().cpu().contiguous().clone()
            return {TENSOR_REF: key}
        if isinstance(value, dict):
            if TENSOR_REF in value:
                raise ConfigError(f"{'/'.join(where) or 'the file'}: the key {TENSOR_REF!r} is reserved for tensors")
            return {str(k): walk(v, [*where, str(k)]) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, [*where, str(i)]) for i, v in enumerate(value)]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise ConfigError(f"cannot store a {type(value).__name__} at {'/'.join(where)}; use plain values")

    config = walk(obj, [])
    return st_save(tensors, metadata={METADATA_KEY: json.dumps(config, allow_nan=True)})


def write(obj: dict, path: str | os.PathLike) -> None:
    """Write ``obj`` atomically: safetensors for a name ending in ``.safetensors``, else ``torch.save``."""
    if Path(path).suffix == SAFETENSORS_SUFFIX:
        data = pack(obj)
        with atomic_write(path) as f:
            f.write(data)
    else:
        atomic_save(obj, path)


# --------------------------------------------------------------------------- reading
def safetensors_header(data: bytes) -> dict | None:
    """The JSON header of safetensors bytes (8-byte little-endian length, then JSON), or None
    when the bytes do not begin like a safetensors file."""
    if len(data) < 10 or data[8:9] != b"{":
        return None
    n = int.from_bytes(data[:8], "little")
    if n < 2 or 8 + n > len(data):
        return None
    try:
        head = json.loads(data[8 : 8 + n])
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return head if isinstance(head, dict) else None


def sniff(data: bytes) -> str:
    """``"safetensors"``, ``"torch"`` (a zip archive or a legacy pickle, as ``torch.save`` writes) or ``"unknown"``."""
    if len(data) >= 9 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") >= 2:
        return "safetensors"
    if data.startswith(b"PK") or data.startswith(b"\x80"):
        return "torch"
    return "unknown"


def _unpack(data: bytes, path, what: str) -> dict:
    head = safetensors_header(data)
    if head is None:
        raise CheckpointError(f"{what} {path} is a damaged safetensors file (its header is not a JSON object)")
    meta = head.get("__metadata__")
    if not isinstance(meta, dict) or METADATA_KEY not in meta:
        raise CheckpointError(
            f"{what} {path} is a safetensors file without refine's configuration (metadata key {METADATA_KEY!r}); "
            "a foreign state_dict loads with --arch package.module:factory"
        )
    text = meta[METADATA_KEY]
    if not isinstance(text, str):
        raise CheckpointError(
            f"{what} {path}: metadata {METADATA_KEY!r} must be a JSON string, got {type(text).__name__}"
        )
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{what} {path}: its configuration is not valid JSON ({_first_line(e)})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{what} {path}: its configuration must be a JSON object, got {type(config).__name__}")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OSError, TypeError, OverflowError) as e:
        raise CheckpointError(f"{what} {path} is truncated or corrupt ({_first_line(e)})") from None
    used: set[str] = set()

    def walk(value: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise CheckpointError(f"{what} {path}: its configuration nests deeper than {_MAX_DEPTH} levels")
        if isinstance(value, dict):
            if TENSOR_REF in value:
                key = value[TENSOR_REF]
                if len(value) != 1 or not isinstance(key, str):
                    raise CheckpointError(f"{what} {path}: a tensor reference must be {{{TENSOR_REF!r}: name}}")
                if key not in tensors:
                    raise CheckpointError(
                        f"{what} {path}: its configuration names a tensor {key[:80]!r} the file does not hold"
                    )
                used.add(key)
                return tensors[key]
            return {k: walk(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, depth + 1) for v in value]
        return value

    obj = walk(config, 0)
    stray = sorted(set(tensors) - used)
    if stray:
        raise CheckpointError(
            f"{what} {path} holds tensors its configuration does not name ({', '.join(stray[:3])[:160]})"
        )
    return obj


def _torch_load(data: bytes, path, what: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e).lower()
        if "weights only" in text or "weights_only" in text or "unsupported global" in text:
            raise CheckpointError(
                f"{what} {path} contains pickled Python objects, which refine does not load (they can run code); "
                "re-save it with refine (plain values and tensors only)"
            ) from None
        raise CheckpointError(f"{what} {path} is not a valid torch file ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - torch's unpickler fails on corrupt bytes with any exception (KeyError, struct.error, ...)
        raise CheckpointError(f"{what} {path} is truncated or corrupt ({_first_line(e)})") from None


def read(path: str | os.PathLike, *, what: str = "checkpoint") -> Any:
    """The contents of a file :func:`write` wrote (either container), checked as it is read.

    Only a regular file that fits in memory is read (not a device, a FIFO or a folder)."""
    p = Path(path)
    data = read_regular_file(p, what)
    kind = sniff(data)
    if kind == "safetensors":
        return _unpack(data, p, what)
    if kind == "torch":
        return _torch_load(data, p, what)
    raise CheckpointError(
        f"{what} {p} is not a file written by torch.save or safetensors (it begins with {data[:12]!r})"
    )
