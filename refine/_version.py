"""The version of refine: the one place it is written (pyproject.toml reads it from here, ``refine --version`` prints it)."""

__version__ = "0.2.0"
