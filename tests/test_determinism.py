"""Determinism on the CPU: what a seed fixes, and where batch size matters.

Holds for every registered sampler (checked here):
- the same seed gives bit-identical samples, latents and info records, run after run, in this
  process and in a fresh one (``refine sample`` in a subprocess with another hash seed);
- torch's global RNG is neither read nor advanced: results do not depend on ``torch.manual_seed``
  and a sampler leaves the global state as it found it;
- one thread or two give the same bits (for the MLP networks here; this rests on the BLAS
  partitioning work by output rows, which torch does not promise for every op).

Batch size (``-o batch_size=``) changes the bits for every method except ``none`` and ``dot``:
- ``none`` draws all latents in one call and only evaluates G in chunks; ``dot`` draws all its
  starting points in one call and moves each one by deterministic steps (its default Adam keeps
  per-element moments, so each sample's path is its own; plain gradient descent, optimizer=sgd,
  with ``noise_scale=0`` likewise). Their outputs are independent of ``batch_size`` as long as the
  networks' per-row results do not depend on the batch (OpenBLAS switches kernels for 1-3 rows;
  MKL on AVX-512 for most shapes, and there the samples agree to rounding and the latents of
  ``none`` bit for bit). ``dot`` with ``optimizer=sgd, noise_scale > 0`` is not.
- ``rs`` and ``drs`` draw proposals and acceptance uniforms batch by batch from one stream, so a
  different batch size interleaves the stream differently; DRS's gamma shift is moreover a
  percentile of each batch and RS's bound M is raised at batch granularity.
- ``mh``, ``sir`` and the noisy gradient samplers (``ddls``, ``dcd``, ``dgflow``) draw each chunk's
  starting points and then its per-step (or per-candidate) noise before moving to the next chunk;
  torch has no per-sample counter-based streams that would make chunks independent of each other.
The results are equally valid samples for any batch size; only the bits differ.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from refine.cli import app
from refine.generator import LatentGenerator, NormalPrior
from refine.io import save_discriminator_ratio, save_gan
from refine.nets import arch_config, build_from_config
from refine.ratio import DiscriminatorRatio
from refine.samplers import get_sampler, list_samplers
from refine.target import LatentTarget
from refine.train.toy2d import train_toy

N = 40
#: Small, fast options per method; batch_size 16 makes every method work in several chunks (40 = 16 + 16 + 8).
FAST = {
    "none": {"batch_size": 16},
    "rs": {"batch_size": 16, "burn_in": 64},
    "drs": {"batch_size": 16, "burn_in": 64},
    "mh": {"batch_size": 16, "k": 8},
    "sir": {"batch_size": 64, "candidates": 8},
    "ddls": {"batch_size": 16, "steps": 4},
    "dcd": {"batch_size": 16, "steps": 4},
    "dgflow": {"batch_size": 16, "steps": 4},
    "dot": {"batch_size": 16, "steps": 4, "pairs": 32},
}
#: Methods whose samples do not depend on batch_size (see the module docs for why the others do).
BATCH_INVARIANT = {"none", "dot"}

G_ARCH = arch_config("mlp", in_dim=2, out_dim=2, hidden=16, depth=2)
D_ARCH = arch_config("mlp", in_dim=2, out_dim=1, hidden=16, depth=2)


def _nets():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_from_config(G_ARCH).eval().requires_grad_(False), build_from_config(D_ARCH).eval().requires_grad_(
            False
        )


@pytest.fixture(scope="module")
def target() -> LatentTarget:
    g, d = _nets()
    return LatentTarget(LatentGenerator(g, NormalPrior((2,))), DiscriminatorRatio(d, "logit"))


def _opts(method: str, **over) -> dict:
    return {**FAST.get(method, {}), **over}


def _run(target, method, seed, **over):
    res = get_sampler(method, **_opts(method, **over)).sample(target, N, rng=torch.Generator().manual_seed(seed))
    info = {k: v for k, v in res.info.items() if "time" not in k}
    return res.x, res.z, info


def test_every_registered_sampler_has_fast_options():
    """New methods must be added to FAST (and classified for batch-size invariance) to be covered here."""
    assert set(list_samplers()) <= set(FAST), sorted(set(list_samplers()) - set(FAST))


@pytest.mark.parametrize("method", list_samplers())
def test_same_seed_gives_identical_samples(target, method):
    x1, z1, i1 = _run(target, method, 7)
    x2, z2, i2 = _run(target, method, 7)
    assert torch.equal(x1, x2)
    assert (z1 is None and z2 is None) or torch.equal(z1, z2)
    assert i1 == i2
    x3, _, _ = _run(target, method, 8)
    assert not torch.equal(x1, x3), "another seed must give other samples (the rng is really used)"


@pytest.mark.parametrize("method", list_samplers())
def test_global_rng_is_neither_used_nor_advanced(target, method):
    torch.manual_seed(1)
    before = torch.get_rng_state()
    x1, _, _ = _run(target, method, 3)
    assert torch.equal(torch.get_rng_state(), before), f"{method} advanced torch's global RNG"
    torch.manual_seed(12345)
    x2, _, _ = _run(target, method, 3)
    assert torch.equal(x1, x2)


@pytest.mark.parametrize("method", list_samplers())
def test_one_or_two_threads_give_the_same_bits(target, method):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        x1, z1, _ = _run(target, method, 5)
        torch.set_num_threads(2)
        x2, z2, _ = _run(target, method, 5)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(x1, x2)


def _rows_are_batch_invariant(target, batch_sizes) -> bool:
    """Whether G and D give each row the same bits in chunks of every batch size on this machine.

    BLAS libraries pick kernels by shape (MKL on AVX-512 gives a row other bits in a batch of 8
    than of 40), and torch promises nothing here; the invariance of ``none`` and ``dot`` holds
    exactly only where the networks themselves are row-invariant."""
    z = torch.randn(N, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for net in (target.generator.net, target.ratio.net):
            outs = [torch.cat([net(c) for c in z.split(bs)]) for bs in batch_sizes]
            if not all(torch.equal(outs[0], o) for o in outs[1:]):
                return False
    return True


def test_raw_latents_do_not_depend_on_batch_size(target):
    """What the seed fixes for ``none`` on any BLAS: every latent, bit for bit, for any batch size."""
    zs = [_run(target, "none", 9, batch_size=bs)[1] for bs in (8, 16, 40)]
    assert all(torch.equal(zs[0], z) for z in zs[1:])


@pytest.mark.parametrize("method", list_samplers())
def test_batch_size_invariance_is_as_documented(target, method):
    """Invariant methods give the same bits for batch sizes 8, 16 and 40; the others are documented not to."""
    outs = []
    for bs in (8, 16, 40):
        over = {"batch_size": bs * FAST[method].get("candidates", 1)} if method == "sir" else {"batch_size": bs}
        outs.append(_run(target, method, 9, **over)[0])
    if method == "dot":  # with Langevin noise (optimizer=sgd) dot draws it chunk by chunk like the others
        noisy = [_run(target, "dot", 9, batch_size=bs, optimizer="sgd", noise_scale=0.5)[0] for bs in (8, 40)]
        assert not torch.equal(*noisy)
    same = all(torch.equal(outs[0], o) for o in outs[1:])
    if method in BATCH_INVARIANT:
        if _rows_are_batch_invariant(target, (8, 16, 40)):
            assert same, f"{method} should not depend on batch_size"
        else:  # this BLAS gives a row other bits in another batch: the samples agree to rounding only
            for o in outs[1:]:
                torch.testing.assert_close(o, outs[0], rtol=1e-5, atol=1e-6)
    else:
        assert not same, (
            f"{method} is now batch-size invariant: add it to BATCH_INVARIANT and to the README's Guarantees"
        )


def test_training_is_deterministic():
    def weights():
        run = train_toy(
            "grid25",
            epochs=2,
            n_train=256,
            batch_size=64,
            hidden=8,
            depth=2,
            rng=torch.Generator().manual_seed(4),
            init_seed=4,
        )
        return [t.clone() for t in run.generator.net.state_dict().values()] + [
            t.clone() for t in run.discriminator.state_dict().values()
        ]

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is fastest
    try:
        a, b = weights(), weights()
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


# ----------------------------------------------------------------------------- across processes
def test_refine_sample_is_identical_in_a_fresh_process(tmp_path):
    g, d = _nets()
    ckpt, ratio = tmp_path / "gan.pt", tmp_path / "ratio.pt"
    save_gan(
        ckpt,
        generator=g,
        generator_arch=G_ARCH,
        prior=NormalPrior((2,)),
        discriminator=d,
        discriminator_arch=D_ARCH,
        meta={"dataset": "grid25"},
    )
    save_discriminator_ratio(ratio, DiscriminatorRatio(d), D_ARCH)
    args = [
        "sample",
        "--method",
        "sir",
        "-n",
        "200",
        "-o",
        "candidates=8",
        "--ckpt",
        str(ckpt),
        "--ratio",
        str(ratio),
        "--seed",
        "3",
        "--device",
        "cpu",
        "--no-progress",
    ]
    res = CliRunner().invoke(app, args + ["--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    env = {**os.environ, "PYTHONHASHSEED": "12345", "MPLBACKEND": "Agg"}
    code = "import sys; from refine.cli import main; sys.argv = ['refine'] + sys.argv[1:]; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, *args, "--out", str(tmp_path / "b")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "a" / "samples.npz") as a, np.load(tmp_path / "b" / "samples.npz") as b:
        assert a.files == b.files
        for k in a.files:
            assert np.array_equal(a[k], b[k]), k
