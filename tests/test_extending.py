"""Adding a method is one class and its registration: the CLI, sharded runs and the network
checks follow what the class declares (``real_rows``, ``real_per_sample``,
``moves_in_data_space``, ``needs_gradients``), with nothing to edit elsewhere. A gradient
method is one :class:`GradientSampler` subclass with a ``_plan``: the engine, the chunking,
the pass counts and the info record come with the base."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass

import numpy as np
from typer.testing import CliRunner

from refine.cli import app
from refine.cli.common import make_rng
from refine.data.toy2d import get_mixture
from refine.io import load_gan, load_ratio
from refine.io.pretrained import DEFAULT_GAN, DEFAULT_RATIO, pretrained_path
from refine.samplers import SAMPLERS, get_sampler
from refine.samplers.base import Sampler, SampleResult, option
from refine.samplers.gradient import GradientSampler, Plan, latent_potential, prior_bounds, prior_start
from refine.target import LatentTarget


@dataclass(frozen=True)
class _StartAtReal(Sampler):
    """A toy method that returns the held-out real sample each output starts from, moved by ``shift``."""

    name: typing.ClassVar[str] = "start-at-real"
    shift: float = option(0.5, "added to every real sample")

    def real_rows(self, n: int) -> int:
        return n

    @property
    def real_per_sample(self) -> bool:
        return True

    def sample(self, target, n, *, rng=None, progress=False, real=None):
        x = real[:n].float() + self.shift
        return SampleResult(x, None, {"method": self.name, "n": n, "g_evals": 0, "d_evals": 0})


def test_a_registered_method_gets_its_real_data_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.setitem(SAMPLERS, _StartAtReal.name, _StartAtReal)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "sample",
            "-m",
            "start-at-real",
            "-o",
            "shift=0.25",
            "-n",
            "30",
            "--seed",
            "4",
            "--no-progress",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    expected = (
        get_mixture("grid25").sample(30, rng=make_rng(4 + 1_000_003)) + 0.25
    )  # the CLI's held-out draw for seed 4
    with np.load(out / "samples.npz") as f:
        np.testing.assert_array_equal(f["x"], expected.numpy())
    record = json.loads((out / "run.json").read_text())
    assert record["method"] == "start-at-real" and record["options"] == {"shift": 0.25}


def test_the_declarations_default_to_a_latent_method_without_real_data():
    @dataclass(frozen=True)
    class Plain(Sampler):
        def sample(self, target, n, *, rng=None, progress=False, real=None):  # pragma: no cover - never run
            raise NotImplementedError

    s = Plain()
    assert s.real_rows(10) == 0 and not s.real_per_sample and not s.moves_in_data_space


@dataclass(frozen=True)
class _HalfRatioLangevin(GradientSampler):
    """A toy gradient method in one class: Langevin in latent space on ``log p0(z) + weight * log r(G(z))``."""

    name: typing.ClassVar[str] = "half-ratio-langevin"
    steps: int = option(3, "Langevin steps per chain")
    step_size: float = option(1e-3, "step size eps")
    weight: float = option(0.5, "the weight of log r in the potential")

    def _plan(self, target, n, rng, real) -> Plan:
        pot = latent_potential(target, prior=True, scale=float(self.weight))
        return Plan(lambda _v0: pot, prior_start(target, rng), "latent", bounds=prior_bounds(target))


def test_a_registered_gradient_method_runs_through_refine_sample(tmp_path, monkeypatch):
    monkeypatch.setitem(SAMPLERS, _HalfRatioLangevin.name, _HalfRatioLangevin)
    out = tmp_path / "out"
    args = ["sample", "-m", _HalfRatioLangevin.name, "-o", "weight=0.25", "-o", "potential_temperature=2"]
    res = CliRunner().invoke(
        app, [*args, "-n", "40", "--seed", "3", "--no-progress", "--device", "cpu", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    record = json.loads((out / "run.json").read_text())
    assert record["options"]["weight"] == 0.25 and record["options"]["potential_temperature"] == 2.0
    info = record["info"]
    assert info["method"] == _HalfRatioLangevin.name and info["n"] == 40 and info["space"] == "latent"
    # the base counts the passes: the start and each of the 3 steps, forward and backward, through G and D
    assert info["g_evals_per_sample"] == 4 and info["g_backward_per_sample"] == 4 and info["d_backward"] == 160
    with np.load(out / "samples.npz") as f:
        x, z = f["x"], f["z"]
    assert x.shape == (40, 2) and z.shape == (40, 2) and np.isfinite(x).all()
    # the same seed through the library gives the same samples
    gan = load_gan(pretrained_path(DEFAULT_GAN))
    target = LatentTarget(gan.generator, load_ratio(pretrained_path(DEFAULT_RATIO)))
    sampler = get_sampler(_HalfRatioLangevin.name, weight=0.25, potential_temperature=2)
    direct = sampler.sample(target, 40, rng=make_rng(3))
    np.testing.assert_allclose(direct.x.numpy(), x, rtol=0, atol=1e-6)
