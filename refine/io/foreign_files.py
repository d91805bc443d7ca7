"""Foreign files, read without running them: what a file holds (recognised from its bytes), a
``torch.load`` with ``weights_only=True`` unless the user opted in (with one-line errors), the
state_dict inside a loaded file, and the wrapper that calls a fixed-batch ``torch.export``
program on any batch. :mod:`refine.io.foreign` builds networks from them.
"""

from __future__ import annotations

import io
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..fs import read_regular_file
from .tensorfile import METADATA_KEY, safetensors_header

__all__ = ["FORMATS", "CODE_FORMATS", "FixedBatch", "code_opt_in", "detect_format", "extract_state_dict", "torch_load"]

#: What a foreign file can hold.
FORMATS = ("state_dict", "safetensors", "torchscript", "export", "pickle")
#: The formats that carry code: loaded only with ``trust_code=True``.
CODE_FORMATS = ("torchscript", "export", "pickle")

OPT_IN = "pass --trust-code (Python: trust_code=True) only if you trust its source"
SAFE_ROUTE = (
    "the safe route is the weights alone, torch.save(net.state_dict(), 'g.pt') or safetensors.torch.save_file(net.state_dict(), 'g.safetensors'), "
    "loaded with --arch package.module:factory naming code you trust"
)


def code_opt_in(trust_code: bool, allow_pickle: bool | None) -> bool:
    """``allow_pickle`` is the old name of ``trust_code``; either opts in."""
    if allow_pickle is not None:
        warnings.warn(
            "allow_pickle is now called trust_code (it covers pickles, TorchScript and torch.export programs)",
            DeprecationWarning,
            stacklevel=3,
        )
        return bool(trust_code or allow_pickle)
    return bool(trust_code)


def load_safetensors(data: bytes, path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise CheckpointError(
            f"{what} {path} is not a valid safetensors file ({(str(e).splitlines() or [type(e).__name__])[0][:160]})"
        ) from None


# --------------------------------------------------------------------------- reading and recognising files
def _read(path: str | Path, what: str) -> bytes:
    return read_regular_file(path, what)


def _zip_names(data: bytes) -> list[str] | None:
    if data[:4] != b"PK\x03\x04":
        return None
    try:
        return zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (
        zipfile.BadZipFile,
        ValueError,
        NotImplementedError,
        EOFError,
        OSError,
    ):  # corrupt, or a zip feature Python lacks
        return None


def _rel(name: str) -> str:
    """An archive entry without its top-level folder (``g/data.pkl`` -> ``data.pkl``)."""
    return name.split("/", 1)[1] if "/" in name else name


def sniff(data: bytes) -> str:
    head = safetensors_header(data)
    if head is not None:
        meta = head.get("__metadata__")
        return "refine" if isinstance(meta, dict) and METADATA_KEY in meta else "safetensors"
    names = _zip_names(data)
    if names is None and data[:4] == b"PK\x03\x04":
        return "torch"  # a damaged zip: torch.load says how
    if names is None:
        # a legacy (non-zip) torch.save file or a plain pickle both start with a pickle opcode
        return "torch" if data[:1] == b"\x80" else "unknown"
    rel = {_rel(n) for n in names}
    if (
        "archive_format" in rel
        or "serialized_exported_program.json" in rel
        or any(r.startswith("models/") and r.endswith(".json") for r in rel)
    ):
        return "export"
    if "constants.pkl" in rel and any(r.startswith("code/") for r in rel):
        return "torchscript"
    if "data.pkl" in rel:
        return "torch"
    return "unknown"


def detect_format(path: str | Path, *, what: str = "file") -> str:
    """``"refine"``, ``"state_dict"``, ``"safetensors"``, ``"torchscript"``, ``"export"``, ``"pickle"`` or ``"unknown"``.

    Reads the file without running anything in it. ``"refine"`` is any file refine wrote
    (a GAN checkpoint, a ratio file).
    """
    data = _read(path, what)
    kind = sniff(data)
    if kind != "torch":
        return kind  # "refine" here: a safetensors file refine wrote
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return "pickle"
    except Exception:  # noqa: BLE001 - a file torch cannot read at all
        return "unknown"
    if isinstance(obj, dict) and str(obj.get("format", "")).startswith("refine."):
        return "refine"
    return "state_dict" if isinstance(obj, dict) else "unknown"


def torch_load(data: bytes, path, what: str, *, allow_pickle: bool, device="cpu") -> Any:
    """``torch.load`` on bytes: ``weights_only=True`` unless the user opted in, with one-line errors."""
    try:
        try:
            return torch.load(io.BytesIO(data), map_location=device, weights_only=not allow_pickle)
        except ModuleNotFoundError:
            # an opted-in pickle names its classes by module; the `refine` script does not put the working
            # directory on sys.path as `python` does, so look there too
            if not allow_pickle or str(Path.cwd()) in sys.path:
                raise
            sys.path.append(str(Path.cwd()))
            return torch.load(io.BytesIO(data), map_location=device, weights_only=False)
    except pickle.UnpicklingError as e:
        text = str(e)
        if not allow_pickle and any(
            s in text.lower() for s in ("weights only", "weights_only", "unsupported global", "unsupported operand")
        ):
            found = re.search(r"GLOBAL ([\w.]+)", text)
            obj = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{what} {path} is a pickle of Python objects{obj}, which refine does not load by default because unpickling can run code; "
                f"{SAFE_ROUTE}; or {OPT_IN}"
            ) from None
        raise CheckpointError(
            f"{what} {path} is not a valid torch file ({(text.splitlines() or [type(e).__name__])[0][:160]})"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch's unpickler fails on corrupt bytes with any exception (KeyError, struct.error, ...)
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        if allow_pickle and isinstance(e, (AttributeError, ModuleNotFoundError)):
            raise CheckpointError(
                f"{what} {path} pickles a class that cannot be imported here ({first}); make its module importable, or re-save it as a state_dict"
            ) from None
        raise CheckpointError(f"{what} {path} is truncated or corrupt ({first})") from None


# --------------------------------------------------------------------------- state_dicts
def _is_state_dict(obj) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _nested_state_dicts(obj: dict, prefix: str = "", depth: int = 0) -> list[str]:
    out = []
    for k, v in obj.items():
        if _is_state_dict(v):
            out.append(prefix + str(k))
        elif isinstance(v, dict) and depth < 2:
            out.extend(_nested_state_dicts(v, f"{prefix}{k}.", depth + 1))
    return out


def extract_state_dict(obj: Any, state_key: str | None, path, role: str = "generator") -> dict[str, torch.Tensor]:
    """The state_dict in a loaded file: the file itself, ``obj[state_key]`` (dotted for nesting), or its only nested one."""
    flag = "--disc-state-key" if role == "discriminator" else "--state-key"
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, expected a state_dict (a dict of tensors) for the {role}"
        )
    if state_key:
        cur: Any = obj
        for part in state_key.split("."):
            if not isinstance(cur, dict) or part not in cur:
                keys = ", ".join(map(str, cur.keys())) if isinstance(cur, dict) else type(cur).__name__
                raise CheckpointError(f"{path} has no entry {state_key!r} for {flag} (found: {keys[:200]})")
            cur = cur[part]
        if isinstance(cur, nn.Module):
            return cur.state_dict()
        if not _is_state_dict(cur):
            raise CheckpointError(f"{path}: entry {state_key!r} is not a state_dict (a dict of tensors)")
        return cur
    if _is_state_dict(obj):
        return obj
    nested = _nested_state_dicts(obj)
    if len(nested) == 1:
        return extract_state_dict(obj, nested[0], path, role)
    if nested:
        raise CheckpointError(
            f"{path} holds several state_dicts ({', '.join(nested)}); choose the {role}'s with {flag} KEY"
        )
    raise CheckpointError(
        f"{path} holds no state_dict (top-level entries: {', '.join(map(str, obj.keys()))[:200] or 'none'})"
    )


class FixedBatch(nn.Module):
    """Call a program exported for batch ``size`` on any batch: chunks of ``size``, the last one padded."""

    def __init__(self, inner: Callable, size: int) -> None:
        super().__init__()
        self.inner = inner
        self.size = int(size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n, b = z.shape[0], self.size
        if n == b:
            return self.inner(z)
        outs = []
        for i in range(0, n, b):
            chunk = z[i : i + b]
            k = chunk.shape[0]
            if k < b:
                chunk = torch.cat([chunk, chunk[-1:].detach().expand(b - k, *chunk.shape[1:])])
            outs.append(self.inner(chunk)[:k])
        if not outs:
            return self.inner(torch.zeros((b, *z.shape[1:]), dtype=z.dtype, device=z.device))[:0]
        return torch.cat(outs)


def export_input(ep) -> tuple[tuple, bool] | None:
    """(shape of the one user input with the batch dim first, whether the batch size is fixed)."""
    users = list(ep.graph_signature.user_inputs)
    if len(users) != 1:
        return None
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name == users[0]:
            val = node.meta.get("val")
            if val is None or not hasattr(val, "shape"):
                return None
            dims = tuple(val.shape)
            fixed = isinstance(dims[0], int) if dims else False
            rest = tuple(int(d) if isinstance(d, int) else None for d in dims)
            return rest, fixed
    return None
