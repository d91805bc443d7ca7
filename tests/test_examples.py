"""The scripts in examples/ run, quickly, and say what they claim."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_wrap_function_recovers_the_data_distribution(capsys):
    ex = load("wrap_function")
    n = 2000
    rows = {r["method"]: r for r in ex.main(["--n", str(n), "--methods", "none,rs,sir"])}
    out = capsys.readouterr().out
    assert "numpy G, rs" in out
    # exact rejection sampling: the mean is within 5 standard errors of the data mean (alpha < 1e-6 per coordinate)
    se = torch.sqrt(torch.diagonal(ex.S).double() / n)
    assert bool(((rows["rs"]["mean"] - ex.MU.double()).abs() < 5 * se).all())
    # the raw generator is far from it (its mean is b = 0)
    assert bool(((rows["none"]["mean"] - ex.MU.double()).abs() > 5 * se).any())


def test_wrap_conv_generator(tmp_path, capsys):
    ex = load("wrap_conv_generator")
    result = ex.main(["--n", "16", "--out", str(tmp_path)])
    assert result["safetensors_matches"]
    assert result["results"]["drs"].x.shape == (16, 1, ex.NZ, ex.NZ)
    assert (tmp_path / "drs.png").is_file() and (tmp_path / "G.safetensors").is_file()
    assert "without output_range" in capsys.readouterr().out


def test_wrap_foreign_wgan(shared_dir, capsys):
    weights = shared_dir / "weights" / "gan" / "toy2d"
    ex = load("wrap_foreign_wgan")
    if not (weights / ex.G_FILE).is_file():
        pytest.skip(f"{weights / ex.G_FILE} is absent")
    n = 1000
    rows = {r["method"]: r for r in ex.main(["--n", str(n), "--weights", str(weights), "--methods", "none,drs,sir"])}
    raw, drs = rows["none"], rows["drs"]
    # PROVENANCE.md: about 26% of raw samples lie within 3 std of a mode. Bound: 5 binomial standard errors.
    assert abs(raw["hq_fraction"] - 0.26) < 5 * math.sqrt(0.26 * 0.74 / n)
    # refinement with the critic keeps more high-quality samples: the gain exceeds 5 standard errors of a
    # difference of two proportions (each variance <= 0.25 / n)
    assert drs["hq_fraction"] - raw["hq_fraction"] > 5 * math.sqrt(2 * 0.25 / n)
