"""The package: one version string (refine/_version.py) that pyproject.toml, `refine --version` and refine.__version__ share."""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib
from typer.testing import CliRunner

import refine
from refine.cli import app

ROOT = Path(__file__).resolve().parent.parent


def test_version_has_one_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "refine._version.__version__"}
    tree = ast.parse((ROOT / "refine" / "_version.py").read_text())
    (assign,) = [n for n in tree.body if isinstance(n, ast.Assign)]
    assert assign.targets[0].id == "__version__" and assign.value.value == refine.__version__


def test_refine_version_prints_it():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"refine {refine.__version__}"


def test_distribution_name_is_not_the_import_name():
    """`refine` on the package index is another project: the distribution is refine-gan, the import stays refine."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "refine-gan" and project["scripts"]["refine"] == "refine.cli:main"
    assert f"## [{refine.__version__}]" in (ROOT / "CHANGELOG.md").read_text()
