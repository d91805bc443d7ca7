"""Adding a method is one class and its registration: the CLI, sharded runs and the network
checks follow what the class declares (``real_rows``, ``real_per_sample``,
``moves_in_data_space``), with nothing to edit elsewhere."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass

import numpy as np
from typer.testing import CliRunner

from refine.cli import app
from refine.cli.common import make_rng
from refine.data.toy2d import get_mixture
from refine.samplers import SAMPLERS
from refine.samplers.base import Sampler, SampleResult, option


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
