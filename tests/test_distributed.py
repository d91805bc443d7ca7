"""Sharded sampling: the plan, the merge, and two CPU processes on the gloo backend."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from refine import distributed as rd
from refine.errors import ConfigError
from refine.generator import LatentGenerator, NormalPrior
from refine.io import save_gan
from refine.metrics.fid import StatsAccumulator
from refine.nets import arch_config, build
from refine.ratio import DiscriminatorRatio
from refine.samplers import get_sampler
from refine.target import LatentTarget

G_ARCH = arch_config("mlp", in_dim=2, out_dim=2, hidden=16, depth=2)
D_ARCH = arch_config("mlp", in_dim=2, out_dim=1, hidden=16, depth=2)
SAMPLE_ARGS = [
    "-m",
    "mh",
    "-n",
    "70",
    "-o",
    "k=4",
    "--device",
    "cpu",
    "--no-progress",
    "--shard-size",
    "25",
    "--seed",
    "3",
]


def _nets():
    torch.manual_seed(0)
    return build("mlp", **G_ARCH["kwargs"]), build("mlp", **D_ARCH["kwargs"])


def _target():
    g, d = _nets()
    return LatentTarget(
        LatentGenerator(g.eval().requires_grad_(False), NormalPrior((2,))),
        DiscriminatorRatio(d.eval().requires_grad_(False)),
    )


def _features(x):
    """A fixed nonlinear feature map (B, 2) -> (B, 5), as a stand-in for a feature network."""
    return torch.cat([x, x**2, (x[:, :1] * x[:, 1:])], 1) + 3.0


def _free_ports(k: int = 1) -> list[int]:
    """``k`` distinct free TCP ports on 127.0.0.1 (all held open until each is known)."""
    socks = [socket.socket() for _ in range(k)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _write_gan(path: Path) -> Path:
    g, d = _nets()
    save_gan(
        path,
        generator=g,
        generator_arch=G_ARCH,
        prior=NormalPrior((2,)),
        discriminator=d,
        discriminator_arch=D_ARCH,
        meta={"dataset": "grid25"},
    )
    return path


# --------------------------------------------------------------------------- the plan
def test_plan_covers_every_sample_once_with_distinct_deterministic_seeds():
    plan = rd.plan_shards(103, seed=5, world_size=4)
    assert [s.size for s in plan] == [26, 26, 26, 25]
    assert [s.start for s in plan] == [0, 26, 52, 78]
    assert len({s.seed for s in plan}) == 4
    assert plan == rd.plan_shards(103, seed=5, world_size=4)
    assert rd.plan_shards(103, seed=6, world_size=4)[0].seed != plan[0].seed
    # A fixed shard size makes the plan independent of the number of processes.
    assert rd.plan_shards(103, seed=5, world_size=1, shard_size=40) == rd.plan_shards(
        103, seed=5, world_size=3, shard_size=40
    )
    assert all(0 <= s.seed < 2**63 for s in plan)


@pytest.mark.parametrize("kw", [{"n": 0}, {"n": 10, "shard_size": 0}, {"n": 10, "world_size": 0}])
def test_plan_rejects_bad_sizes(kw):
    with pytest.raises(ConfigError):
        rd.plan_shards(seed=0, **{"world_size": 1, **kw})


def test_one_process_without_torchrun_has_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = rd.init("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.active) == (0, 1, None, False)
    ctx.barrier()  # a no-op
    acc = StatsAccumulator().update(np.ones((3, 2)))
    assert rd.all_reduce_stats(acc, ctx) is acc


def test_world_size_without_a_rendezvous_address_is_a_config_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        rd.init("cpu")


def test_merge_info_sums_counts_and_weights_rates():
    a = {
        "method": "rs",
        "n": 10,
        "proposals": 100,
        "accepted": 10,
        "acceptance_rate": 0.1,
        "g_evals": 150,
        "g_evals_per_sample": 15.0,
        "wall_time_s": 1.0,
        "shard": 0,
    }
    b = {
        "method": "rs",
        "n": 30,
        "proposals": 100,
        "accepted": 30,
        "acceptance_rate": 0.3,
        "g_evals": 150,
        "g_evals_per_sample": 5.0,
        "wall_time_s": 2.0,
        "shard": 1,
    }
    m = rd.merge_info([a, b])
    assert m["method"] == "rs" and m["n"] == 40 and m["proposals"] == 200 and m["accepted"] == 40
    assert m["acceptance_rate"] == pytest.approx(40 / 200)
    assert m["g_evals_per_sample"] == pytest.approx(300 / 40)
    assert m["shard_time_s_sum"] == pytest.approx(3.0)
    assert m["per_shard"]["shard"] == [0, 1]


# --------------------------------------------------------------------------- one process
def test_merged_result_is_the_concatenation_of_shards_and_deterministic(tmp_path):
    target = _target()
    sampler = get_sampler("sir", candidates=4)
    res = rd.sample_sharded(sampler, target, 45, seed=11, out=tmp_path / "a", shard_size=20, features=_features)
    plan = rd.plan_shards(45, seed=11, shard_size=20)
    # Each shard is exactly the sampler run with the shard's own seed.
    expect = [sampler.sample(target, s.size, rng=torch.Generator().manual_seed(s.seed)) for s in plan]
    assert torch.equal(res.x, torch.cat([e.x for e in expect]))
    assert torch.equal(res.z, torch.cat([e.z for e in expect]))
    x, z, infos = rd.load_shards(tmp_path / "a", plan)
    merged = np.load(tmp_path / "a" / "samples.npz")
    assert np.array_equal(merged["x"], x) and np.array_equal(merged["z"], z)
    assert [len(i) for i in (x, z)] == [45, 45] and [i["n"] for i in infos] == [20, 20, 5]
    assert res.info["n"] == 45 and res.info["proposals"] == 45 * 4
    # Rerun: same result, bit for bit.
    again = rd.sample_sharded(sampler, target, 45, seed=11, out=tmp_path / "b", shard_size=20)
    assert torch.equal(again.x, res.x)
    # Feature statistics of the merged samples.
    mu, sigma = StatsAccumulator().update(_features(res.x)).compute()
    with np.load(tmp_path / "a" / "feature_stats.npz") as f:
        np.testing.assert_allclose(f["mu"], mu, rtol=1e-12)
        np.testing.assert_allclose(f["sigma"], sigma, rtol=1e-12, atol=1e-14)


def test_resume_keeps_matching_shards_and_redoes_others(tmp_path):
    target = _target()
    sampler = get_sampler("mh", k=3)
    first = rd.sample_sharded(sampler, target, 30, seed=2, out=tmp_path, shard_size=10)
    rec = tmp_path / "shards" / "shard-00001.json"
    stamp = rec.stat().st_mtime_ns
    (tmp_path / "shards" / "shard-00002.json").unlink()  # an unfinished shard
    again = rd.sample_sharded(sampler, target, 30, seed=2, out=tmp_path, shard_size=10, resume=True)
    assert torch.equal(again.x, first.x)
    assert rec.stat().st_mtime_ns == stamp
    assert again.info["distributed"]["resumed_on_rank0"] == 2
    # A different seed does not match the stored shards: everything is redone.
    other = rd.sample_sharded(sampler, target, 30, seed=3, out=tmp_path, shard_size=10, resume=True)
    assert other.info["distributed"]["resumed_on_rank0"] == 0
    assert not torch.equal(other.x, first.x)


def test_cli_distributed_flag_runs_as_one_process(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from refine.cli import app

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ckpt = _write_gan(tmp_path / "gan.pt")
    r = CliRunner().invoke(
        app, ["sample", *SAMPLE_ARGS, "--ckpt", str(ckpt), "--out", str(tmp_path / "o"), "--distributed"]
    )
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "o" / "run.json").read_text())
    assert rec["info"]["distributed"]["world_size"] == 1 and len(rec["info"]["distributed"]["shards"]) == 3
    assert np.load(tmp_path / "o" / "samples.npz")["x"].shape == (70, 2)
    bad = CliRunner().invoke(
        app,
        [
            "sample",
            *SAMPLE_ARGS[:-4],
            "--shard-size",
            "0",
            "--ckpt",
            str(ckpt),
            "--out",
            str(tmp_path / "p"),
            "--distributed",
        ],
    )
    assert bad.exit_code == 2 and "shard size" in bad.output
    no_images = CliRunner().invoke(
        app, ["sample", *SAMPLE_ARGS, "--ckpt", str(ckpt), "--out", str(tmp_path / "q"), "--feature-stats", "inception"]
    )
    assert no_images.exit_code == 2 and "image samples" in no_images.output
    assert not (tmp_path / "q" / "samples.npz").exists()


def test_chains_started_at_real_samples_get_their_shards_rows(tmp_path):
    target = _target()
    real = torch.randn(30, 2, generator=torch.Generator().manual_seed(4))
    sampler = get_sampler("mh", k=2, init="real")
    res = rd.sample_sharded(sampler, target, 30, seed=0, out=tmp_path, shard_size=12, real=real)
    plan = rd.plan_shards(30, seed=0, shard_size=12)
    expect = torch.cat(
        [
            sampler.sample(
                target, s.size, rng=torch.Generator().manual_seed(s.seed), real=real[s.start : s.start + s.size]
            ).x
            for s in plan
        ]
    )
    assert torch.equal(res.x, expect)


# --------------------------------------------------------------------------- two processes, gloo
def _worker(rank: int, world: int, ports: tuple, root: str, ckpt: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(ports[0]),
        }
    )
    # 1. The command line under two processes (it joins and leaves the group itself).
    from refine.cli import app

    app(["sample", *SAMPLE_ARGS, "--ckpt", ckpt, "--out", f"{root}/cli"], standalone_mode=False)
    # 2. The library with feature statistics: 3 shards over 2 ranks (rank 0 runs two) ...
    # A new group on a new port: the first group's store may still be closing on rank 0.
    os.environ["MASTER_PORT"] = str(ports[1])
    ctx = rd.init("cpu")
    assert ctx.active and ctx.backend == "gloo" and ctx.world_size == world
    try:
        target = _target()
        res = rd.sample_sharded(
            get_sampler("drs", burn_in=50),
            target,
            50,
            seed=7,
            out=f"{root}/lib",
            ctx=ctx,
            shard_size=20,
            features=_features,
        )
        assert (res is None) == (rank != 0)
        # ... and a run in which rank 1 holds no shard (and no features) at all.
        rd.sample_sharded(
            get_sampler("sir", candidates=3),
            target,
            16,
            seed=1,
            out=f"{root}/one",
            ctx=ctx,
            shard_size=16,
            features=_features,
        )
    finally:
        ctx.close()


def test_two_gloo_processes_match_one_process(tmp_path):
    mp = pytest.importorskip("torch.multiprocessing")
    ckpt = str(_write_gan(tmp_path / "gan.pt"))
    mp.spawn(_worker, args=(2, tuple(_free_ports(2)), str(tmp_path), ckpt), nprocs=2, join=True)

    # The CLI run: two shards on rank 0, one on rank 1; merged = concatenation = one process.
    cli = np.load(tmp_path / "cli" / "samples.npz")
    plan = rd.plan_shards(70, seed=3, shard_size=25)
    x, z, infos = rd.load_shards(tmp_path / "cli", plan)
    assert np.array_equal(cli["x"], x) and np.array_equal(cli["z"], z)
    assert [i["rank"] for i in infos] == [0, 1, 0]
    rec = json.loads((tmp_path / "cli" / "run.json").read_text())
    assert rec["info"]["distributed"]["world_size"] == 2 and rec["info"]["n"] == 70

    from typer.testing import CliRunner

    from refine.cli import app

    r = CliRunner().invoke(
        app, ["sample", *SAMPLE_ARGS, "--ckpt", ckpt, "--out", str(tmp_path / "single"), "--distributed"]
    )
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load(tmp_path / "single" / "samples.npz")["x"], cli["x"])

    # The library run: same samples as one process, and statistics reduced across ranks equal
    # the statistics of all samples computed in one place.
    target = _target()
    single = rd.sample_sharded(
        get_sampler("drs", burn_in=50), target, 50, seed=7, out=tmp_path / "lib1", shard_size=20, features=_features
    )
    merged = np.load(tmp_path / "lib" / "samples.npz")
    assert np.array_equal(merged["x"], single.x.numpy())
    mu, sigma = StatsAccumulator().update(_features(single.x)).compute()
    with np.load(tmp_path / "lib" / "feature_stats.npz") as f:
        np.testing.assert_allclose(f["mu"], mu, rtol=1e-12)
        np.testing.assert_allclose(f["sigma"], sigma, rtol=1e-10, atol=1e-13)
        assert json.loads(str(f["meta"]))["n"] == 50
    one = np.load(tmp_path / "one" / "samples.npz")["x"]
    mu1, sigma1 = StatsAccumulator().update(_features(torch.from_numpy(one))).compute()
    with np.load(tmp_path / "one" / "feature_stats.npz") as f:
        np.testing.assert_allclose(f["mu"], mu1, rtol=1e-12)
        np.testing.assert_allclose(f["sigma"], sigma1, rtol=1e-10, atol=1e-13)


@pytest.mark.slow
def test_torchrun_two_processes_end_to_end(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    ckpt = str(_write_gan(tmp_path / "gan.pt"))
    cmd = [
        torchrun,
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_ports()[0]),
        "-m",
        "refine",
        "sample",
        *SAMPLE_ARGS,
        "--ckpt",
        ckpt,
        "--out",
        str(tmp_path / "tr"),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    x, _, infos = rd.load_shards(tmp_path / "tr", rd.plan_shards(70, seed=3, shard_size=25))
    assert np.array_equal(np.load(tmp_path / "tr" / "samples.npz")["x"], x)
    assert {i["rank"] for i in infos} == {0, 1}
