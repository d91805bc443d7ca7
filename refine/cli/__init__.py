"""The ``refine`` command line (typer). Commands live one per module; no algorithm code here."""
from __future__ import annotations

from .. import _compat

_compat.ensure_torchvision()

from . import eval as _eval, fit_ratio as _fit_ratio, listing as _listing, sample as _sample, train as _train, tune as _tune  # noqa: E402,F401
from .app import app  # noqa: E402

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="refine")
