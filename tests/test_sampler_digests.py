"""Every sampler's samples on the shipped 2-D pair, pinned: a refactoring must not change a bit.

``tests/data/sampler_digests.json`` holds, per method, the sha256 of the float32 samples for a
fixed seed and small options, and the samples themselves. On the platform the digests were
recorded on (torch version, CPU capability, BLAS) the test demands the same bytes; on another
platform, where BLAS may round differently, it demands the same samples to float32 rounding
(accept/reject decisions of a tiny MLP do not flip at that scale). Re-pin deliberately, after a
change that is meant to alter samples, with ``REFINE_PIN_DIGESTS=1 pytest tests/test_sampler_digests.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from refine.io import load_gan, load_ratio
from refine.io.pretrained import DEFAULT_GAN, DEFAULT_RATIO, pretrained_path
from refine.samplers import get_sampler, list_samplers
from refine.target import LatentTarget

PINS = Path(__file__).parent / "data" / "sampler_digests.json"
N = 48
SEED = 20261206
#: Small options that make every method work in several batches and finish fast.
OPTIONS = {
    "none": {"batch_size": 16},
    "rs": {"batch_size": 64, "burn_in": 256, "m_quantile": 0.95},
    "drs": {"batch_size": 64, "burn_in": 256},
    "mh": {"batch_size": 16, "k": 16},
    "sir": {"batch_size": 128, "candidates": 8},
    "ddls": {"batch_size": 16, "steps": 5},
    "dcd": {"batch_size": 16, "steps": 5},
    "dgflow": {"batch_size": 16, "steps": 5},
    "dot": {"batch_size": 16, "steps": 5},
    # DOT before its defaults followed the reference (plain gradient descent, one max over the pairs):
    # pinned to the samples it gave then, so optimizer=sgd is the old method bit for bit
    "dot:sgd": {"batch_size": 16, "steps": 5, "optimizer": "sgd", "k_eff_repeats": 1},
}


def platform_key() -> str:
    blas = "mkl" if torch.backends.mkl.is_available() else "other-blas"
    return f"torch {torch.__version__.split('+')[0]} / {torch.backends.cpu.get_cpu_capability()} / {blas}"


@pytest.fixture(scope="module")
def target() -> LatentTarget:
    gan = load_gan(pretrained_path(DEFAULT_GAN))
    return LatentTarget(gan.generator, load_ratio(pretrained_path(DEFAULT_RATIO)))


def _samples(target, method: str) -> np.ndarray:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = get_sampler(method.split(":")[0], **OPTIONS[method]).sample(
            target, N, rng=torch.Generator().manual_seed(SEED)
        )
    finally:
        torch.set_num_threads(before)
    return res.x.detach().cpu().numpy().astype(np.float32)


def _pins() -> dict:
    return json.loads(PINS.read_text()) if PINS.is_file() else {"platform": None, "methods": {}}


def test_every_registered_sampler_is_pinned():
    assert set(list_samplers()) <= set(OPTIONS), sorted(set(list_samplers()) - set(OPTIONS))
    if not os.environ.get("REFINE_PIN_DIGESTS"):
        assert set(OPTIONS) <= set(_pins()["methods"]), (
            "pin the new method: REFINE_PIN_DIGESTS=1 pytest tests/test_sampler_digests.py"
        )


@pytest.mark.parametrize("method", sorted(OPTIONS))
def test_samples_are_unchanged(target, method):
    x = _samples(target, method)
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
    if os.environ.get("REFINE_PIN_DIGESTS"):
        pins = _pins()
        pins["platform"] = platform_key()
        pins["methods"][method] = {"sha256": digest, "shape": list(x.shape), "x": x.ravel().tolist()}
        PINS.parent.mkdir(exist_ok=True)
        PINS.write_text(json.dumps(pins, indent=1) + "\n")
        return
    pin = _pins()["methods"][method]
    assert list(x.shape) == pin["shape"]
    if _pins()["platform"] == platform_key():
        assert digest == pin["sha256"], f"{method}: the samples changed"
    else:
        np.testing.assert_allclose(x.ravel(), np.asarray(pin["x"], dtype=np.float32), rtol=1e-4, atol=1e-5)
