"""The ``refine`` command line (typer). Commands live one per module; no algorithm code here."""

from __future__ import annotations

import signal
import sys
import warnings

from .. import _compat

_compat.ensure_torchvision()

from . import data as _data  # noqa: E402,F401  (each command module registers its command)
from . import eval as _eval  # noqa: E402,F401
from . import fit_ratio as _fit_ratio  # noqa: E402,F401
from . import listing as _listing  # noqa: E402,F401
from . import sample as _sample  # noqa: E402,F401
from . import train as _train  # noqa: E402,F401
from . import train_classifier as _train_classifier  # noqa: E402,F401
from . import tune as _tune  # noqa: E402,F401
from .app import app  # noqa: E402

__all__ = ["app", "main"]


def _terminate(signum, frame) -> None:
    """SIGTERM (``kill``, a job scheduler's time limit) ends a command as Ctrl-C does: the staged
    files of an unfinished run are removed and every earlier result stays as it was."""
    raise KeyboardInterrupt


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on the command line as one ``warning:`` line each (no file and line of refine's code)."""
    print(f"warning: {message}", file=sys.stderr)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    # refine's own deprecations (old option names and values) are for the person typing the command
    warnings.filterwarnings("default", category=DeprecationWarning, module=r"refine(\.|$)")
    warnings.showwarning = _one_line_warning
    app(prog_name="refine")
