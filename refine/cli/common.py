"""Shared plumbing of the CLI: one-line errors, devices, seeds, run records. No algorithms here."""

from __future__ import annotations

import functools
import json
import platform
import sys
import time
from pathlib import Path

import torch
import typer

from .._version import __version__
from ..errors import ConfigError, RefineError
from ..fs import json_default
from ..outputs import remove_if_unused
from ..validate import MAX_SEED, as_int

__all__ = ["cli_errors", "resolve_device", "make_rng", "versions", "echo_err", "prepare_out_dir"]


def echo_err(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)


def cli_errors(fn):
    """Turn errors a user can cause into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _CREATED.clear()
        ok = False
        try:
            result = fn(*args, **kwargs)
            ok = True
            return result
        except typer.Exit as e:
            ok = not e.exit_code
            raise
        except RefineError as e:
            echo_err(str(e))
        except OSError as e:  # a missing or unreadable file, a full disk, ...: the system's one-line reason
            echo_err(
                f"{e.strerror or e}: {e.filename}"
                if getattr(e, "filename", None)
                else (e.strerror or str(e) or type(e).__name__)
            )
        except KeyboardInterrupt:
            echo_err("interrupted; nothing was written in place of existing outputs")
            raise typer.Exit(130) from None
        finally:
            if not ok:
                _remove_created_dirs()
            _CREATED.clear()
        raise typer.Exit(2)

    return wrapper


#: Folders that :func:`prepare_out_dir` created during the running command, outermost first.
_CREATED: list[Path] = []


def _remove_created_dirs() -> None:
    """After a failed command, remove the output folders it created that are still empty."""
    for d in reversed(_CREATED):
        if not remove_if_unused(d):  # not empty, or in use by another run: keep it and its parents
            break


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit CUDA device without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA GPU is available here; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type not in ("cpu", "mps"):
        raise ConfigError(f"--device {device!r} is not supported; use auto, cpu or cuda[:N]")
    return dev


def make_rng(seed: int) -> torch.Generator:
    """The CLI's one source of randomness: a CPU generator seeded with ``--seed``.

    Noise is drawn on the CPU and moved, so a seed gives the same latents on every device.
    """
    seed = as_int(seed, "--seed", minimum=0, maximum=MAX_SEED)
    return torch.Generator(device="cpu").manual_seed(seed)


def versions() -> dict:

    return {
        "refine": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def command_line() -> str:
    return " ".join(["refine", *sys.argv[1:]])


def prepare_out_dir(out: Path) -> Path:
    """Check that ``out`` is (or can be) a writable folder, before any long work starts."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    missing = [p for p in [out, *out.parents] if not p.exists()]
    _CREATED.extend(reversed(missing))
    for _attempt in range(5):
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".refine-write-test"
            probe.write_bytes(b"")
            probe.unlink()
            return out
        except FileNotFoundError as e:  # a concurrent run that made the folder failed and removed it: again
            error = e
        except OSError as e:
            error = e
            break
    raise ConfigError(f"--out {out} is not writable ({error.strerror or error}); choose another folder") from None


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=json_default)
