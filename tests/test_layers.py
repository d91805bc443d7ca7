"""The import-linter contract covers every top-level module of refine (a module missing from the
layers would be free to import anything), and the contract holds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> set[str]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    return {name.strip() for layer in cfg["layers"] for name in layer.split("|")}


def test_every_top_level_module_is_in_a_layer():
    pkg = ROOT / "refine"
    modules = {p.stem for p in pkg.glob("*.py") if p.stem not in ("__init__", "__main__")}
    modules |= {p.name for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert modules <= _layers(), f"add to [tool.importlinter] layers: {sorted(modules - _layers())}"
    assert _layers() <= modules, f"layers name modules that do not exist: {sorted(_layers() - modules)}"


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is not installed")
def test_the_layering_holds():
    res = subprocess.run(["lint-imports", "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
