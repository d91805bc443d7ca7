"""Sharded sampling across processes with ``torch.distributed``.

``torchrun --nproc_per_node N -m refine sample ...`` (or ``refine sample --distributed``)
splits the ``n`` requested samples into shards, runs each shard with its own seed on one
process, writes every shard to ``OUT/shards/`` and merges them, in shard order, into
``OUT/samples.npz`` on rank 0. The same code runs as one process without ``torchrun``.

Determinism
    The plan depends on ``n``, ``seed`` and the shard size only: shard ``i`` holds samples
    ``[i * shard_size, (i + 1) * shard_size)`` and draws them from a ``torch.Generator`` seeded
    with :func:`shard_seed` ``(seed, i)``; rank ``r`` of ``W`` runs shards ``r, r + W, ...``.
    The merged result is therefore the concatenation of the shards and is the same on every
    rerun. The default shard size is ``ceil(n / W)`` (one shard per process); pass a fixed
    ``shard_size`` and the merged result is also the same for any number of processes.

Backends
    gloo for CPU work, nccl for CUDA. Under ``torchrun`` each process joins the group from
    the environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); a CUDA device
    without an index becomes ``cuda:LOCAL_RANK``. Without those variables there is no process
    group and every collective is a no-op. Every process must see ``OUT`` (one machine, or a
    shared filesystem): rank 0 reads the other ranks' shards from there.

Feature statistics
    With ``features=`` each process accumulates the mean and covariance of its shards'
    features; :func:`all_reduce_stats` combines them across processes as sums of features
    and of outer products, taken about a common centre (rank 0's mean) so that float64
    cancellation stays negligible, and every rank ends with the statistics of all ``n``
    samples, the same as one process would compute. Rank 0 writes them to
    ``OUT/feature_stats.npz`` (``mu``, ``sigma``: the pytorch-fid format).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError, ConfigError, ShapeError
from .fs import atomic_write, write_json
from .metrics.fid import StatsAccumulator, save_statistics
from .samplers.base import SampleInfo, SampleResult

__all__ = [
    "DistContext",
    "Shard",
    "init",
    "launched_distributed",
    "shard_seed",
    "plan_shards",
    "sample_sharded",
    "merge_info",
    "all_reduce_stats",
    "load_shards",
]

_SHARD_DIR = "shards"


# --------------------------------------------------------------------------- process group
def launched_distributed() -> bool:
    """True when the environment says this process is one of several (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


@dataclass
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, its device and the backend in use.

    ``backend`` is None when there is no process group (one process); collectives are then
    no-ops. ``owns_group`` says whether :func:`init` created the group (and :meth:`close`
    destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.backend is not None and self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            if self.backend == "nccl":
                torch.distributed.barrier(device_ids=[self.device.index or 0])
            else:
                torch.distributed.barrier()

    def collective_device(self) -> torch.device:
        """Where tensors must live for a collective: the GPU for nccl, the CPU for gloo."""
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def close(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.owns_group = False


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not an integer; launch with torchrun, which sets it"
        ) from None


def init(device: torch.device | str = "cpu", *, backend: str | None = None) -> DistContext:
    """Join the process group ``torchrun`` describes in the environment, or run as one process.

    ``backend`` defaults to nccl for a CUDA device and gloo otherwise. A CUDA device without
    an index becomes ``cuda:LOCAL_RANK``. If a process group already exists it is used as is.
    """
    device = torch.device(device)
    dist = torch.distributed
    if not dist.is_available():  # pragma: no cover - torch builds without distributed
        if launched_distributed():
            raise ConfigError(
                "this torch build has no torch.distributed; run one process, or install a torch with distributed support"
            )
        return DistContext(device=device)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = _env_int("LOCAL_RANK", rank)
        return DistContext(rank, world, local, _rank_device(device, local, world), dist.get_backend(), owns_group=False)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(device=device)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world} but {', '.join(missing)} is not set; launch with torchrun --nproc_per_node N -m refine ..."
        )
    device = _rank_device(device, local, world)
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        raise ConfigError("the nccl backend is not available in this torch build; use --device cpu (gloo)")
    if backend == "gloo" and not dist.is_gloo_available():  # pragma: no cover - depends on the build
        raise ConfigError("the gloo backend is not available in this torch build")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://", "rank": rank, "world_size": world}
    if backend == "nccl":
        kwargs["device_id"] = device
    dist.init_process_group(**kwargs)
    return DistContext(rank, world, local, device, backend, owns_group=True)


def _rank_device(device: torch.device, local_rank: int, world: int) -> torch.device:
    if device.type == "cuda" and device.index is None and world > 1:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} CUDA device(s) present; start at most that many processes per node"
            )
        return torch.device("cuda", local_rank)
    return device


# --------------------------------------------------------------------------- the plan
def shard_seed(seed: int, index: int) -> int:
    """The seed of shard ``index``: a hash of ``(seed, index)`` by numpy's SeedSequence (63 bits).

    Seeds of different shards are statistically independent, unlike ``seed + index``,
    whose streams overlap across runs with nearby seeds.
    """
    if seed < 0 or index < 0:
        raise ConfigError(f"seed and shard index must be >= 0, got seed={seed}, index={index}")
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))  # < 2**63


@dataclass(frozen=True)
class Shard:
    """Samples ``[start, start + size)`` of the run, drawn with ``seed``."""

    index: int
    start: int
    size: int
    seed: int

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"


def plan_shards(n: int, *, seed: int, world_size: int = 1, shard_size: int | None = None) -> list[Shard]:
    """Split ``n`` samples into shards of ``shard_size`` (default ``ceil(n / world_size)``)."""
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ConfigError(f"number of samples must be a positive integer, got {n!r}")
    if world_size < 1:
        raise ConfigError(f"world size must be >= 1, got {world_size}")
    if shard_size is None:
        shard_size = math.ceil(n / world_size)
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size <= 0:
        raise ConfigError(f"shard size must be a positive integer, got {shard_size!r}")
    return [Shard(i, s, min(shard_size, n - s), shard_seed(seed, i)) for i, s in enumerate(range(0, n, shard_size))]


# --------------------------------------------------------------------------- running
def _shard_key(shard: Shard, method: str, options: dict, n: int, seed: int, shard_size: int, fingerprint: Any) -> dict:
    key = {
        "method": method,
        "options": options,
        "n": n,
        "seed": seed,
        "shard_size": shard_size,
        "index": shard.index,
        "start": shard.start,
        "size": shard.size,
        "shard_seed": shard.seed,
        "fingerprint": fingerprint,
    }
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def _write_shard(folder: Path, shard: Shard, result: SampleResult, key: dict) -> None:
    arrays = {"x": result.x.detach().float().cpu().numpy()}
    if result.z is not None:
        arrays["z"] = result.z.detach().float().cpu().numpy()
    with atomic_write(folder / f"{shard.name}.npz") as f:
        np.savez(f, **arrays)
    # The record is written last: a shard counts as done only once its record exists.
    write_json({"key": key, "info": dict(result.info)}, folder / f"{shard.name}.json")


def _read_shard(folder: Path, shard: Shard) -> tuple[dict, dict[str, np.ndarray]]:
    rec_path, npz_path = folder / f"{shard.name}.json", folder / f"{shard.name}.npz"
    try:
        with open(rec_path) as f:
            rec = json.load(f)
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError as e:
        raise CheckpointError(
            f"shard {shard.index} is missing ({e.filename}); every process must write to the same --out folder (one machine or a shared filesystem)"
        ) from None
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"shard file {npz_path} or {rec_path} is unreadable ({str(e).splitlines()[0][:120]}); delete the shards folder and run again"
        ) from None
    if len(arrays.get("x", ())) != shard.size:
        raise CheckpointError(
            f"{npz_path} holds {len(arrays.get('x', ()))} samples, the plan says {shard.size}; delete the shards folder and run again"
        )
    return rec, arrays


def _completed(folder: Path, shard: Shard, key: dict) -> bool:
    try:
        with open(folder / f"{shard.name}.json") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return False
    return rec.get("key") == key and (folder / f"{shard.name}.npz").is_file()


def load_shards(out: str | os.PathLike, shards: list[Shard]) -> tuple[np.ndarray, np.ndarray | None, list[dict]]:
    """Concatenate the shards' ``x`` (and ``z`` where every shard has it) in shard order."""
    folder = Path(out) / _SHARD_DIR
    xs, zs, infos = [], [], []
    for sh in shards:
        rec, arrays = _read_shard(folder, sh)
        xs.append(arrays["x"])
        zs.append(arrays.get("z"))
        infos.append(rec.get("info", {}))
    z = np.concatenate(zs) if all(a is not None for a in zs) else None
    return np.concatenate(xs), z, infos


def merge_info(infos: list[Mapping[str, Any]]) -> SampleInfo:
    """One info record for several shards: :meth:`refine.samplers.base.SampleInfo.merge`.

    Counters are summed and rates recomputed from the sums (``acceptance_rate`` is
    accepted over proposals, ``*_per_sample`` over the samples), sample-averaged extras
    such as ``ess`` are weighted by samples, values every shard agrees on are kept, and the
    rest are listed per shard under ``per_shard``.
    """
    return SampleInfo.merge(infos)


def _new_accumulator():
    return StatsAccumulator()


def all_reduce_stats(acc, ctx: DistContext):
    """Combine a ``StatsAccumulator`` across processes; every rank gets the global statistics.

    Each rank turns its (count, mean, centred outer-product sum) into sums of features and
    of outer products about a common centre ``c`` (rank 0's mean), ``S = sum (x - c)`` and
    ``O = sum (x - c)(x - c)^T``; one ``all_reduce`` adds them up in float64, and the global
    mean and centred sum are ``c + S / N`` and ``O - S S^T / N``. With one process the
    accumulator is returned as it is.
    """
    if not ctx.active:
        return acc
    dist = torch.distributed
    dev = ctx.collective_device()
    state = acc.state_dict()
    count = int(state["count"])
    dim_t = torch.tensor([state["dim"] if state["dim"] is not None else -1, count], dtype=torch.int64, device=dev)
    dims = [torch.zeros_like(dim_t) for _ in range(ctx.world_size)]
    dist.all_gather(dims, dim_t)
    known = {int(d[0]) for d in dims if int(d[1]) > 0}
    if len(known) > 1:
        raise ShapeError(
            f"processes hold features of different dimensions {sorted(known)}; every rank must use the same feature network"
        )
    if not known:
        return acc
    dim = known.pop()
    mean = np.zeros(dim) if count == 0 else np.asarray(state["mean"], dtype=np.float64)
    m2 = np.zeros((dim, dim)) if count == 0 else np.asarray(state["m2"], dtype=np.float64)
    # The common centre: the mean of the first rank that holds any rows.
    first = next(r for r, d in enumerate(dims) if int(d[1]) > 0)
    centre = torch.from_numpy(mean.copy()).to(dev)
    dist.broadcast(centre, src=first)
    c = centre.cpu().numpy()
    d = mean - c
    s = count * d
    o = m2 + count * np.outer(d, d)
    flat = torch.from_numpy(np.concatenate([[float(count)], s, o.ravel()])).to(dev)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat = flat.cpu().numpy()
    total = int(round(flat[0]))
    s_all, o_all = flat[1 : 1 + dim], flat[1 + dim :].reshape(dim, dim)
    reduced = type(acc).from_state_dict(
        {"count": total, "dim": dim, "mean": c + s_all / total, "m2": o_all - np.outer(s_all, s_all) / total}
    )
    return reduced


def sample_sharded(
    sampler,
    target,
    n: int,
    *,
    seed: int,
    out: str | os.PathLike,
    ctx: DistContext | None = None,
    shard_size: int | None = None,
    real: torch.Tensor | None = None,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    feature_batch: int = 256,
    resume: bool = False,
    fingerprint: Any = None,
    progress: bool = False,
    dest: str | os.PathLike | None = None,
) -> SampleResult | None:
    """Run ``sampler`` on this process's shards of ``n`` samples; merge on rank 0.

    Writes ``OUT/shards/shard-NNNNN.{npz,json}`` per shard and, on rank 0, ``OUT/samples.npz``
    (``x`` and ``z``, the shards concatenated in order) and, with ``features``,
    ``OUT/feature_stats.npz``. Returns the merged :class:`SampleResult` (tensors on the CPU)
    on rank 0 and None on the other ranks. ``info["distributed"]`` records the plan.

    ``real``: held-out real samples. For a sampler that starts one chain per sample at them
    (``init="real"``) it holds one row per requested sample and shard ``i`` gets its rows;
    otherwise (e.g. data a sampler trains on) every shard gets all of it. ``resume=True`` keeps shards already on disk whose record matches this run
    (method, options, n, seed, shard size and ``fingerprint``, e.g. checkpoint hashes).
    ``dest``: where rank 0 writes the merged files (default ``out``; ``refine sample`` passes
    the staging folder of its :class:`refine.outputs.RunFolder`).
    """
    t0 = time.perf_counter()
    ctx = ctx or DistContext(device=target.device)
    shards = plan_shards(n, seed=seed, world_size=ctx.world_size, shard_size=shard_size)
    size = shards[0].size
    per_sample = real is not None and sampler.real_per_sample
    if per_sample and len(real) < n:
        raise ShapeError(f"real= must hold one row per requested sample: {n} samples, {len(real)} real rows")
    folder = Path(out) / _SHARD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    mine = shards[ctx.rank :: ctx.world_size]
    acc = _new_accumulator() if features is not None else None
    options = sampler.options()
    resumed = 0
    for sh in mine:
        key = _shard_key(sh, sampler.name, options, n, seed, size, fingerprint)
        if resume and _completed(folder, sh, key):
            resumed += 1
            x = torch.from_numpy(_read_shard(folder, sh)[1]["x"])
        else:
            rng = torch.Generator(device="cpu").manual_seed(sh.seed)
            part = real[sh.start : sh.start + sh.size] if per_sample else real
            res = sampler.sample(target, sh.size, rng=rng, progress=progress, real=part)
            res.info = SampleInfo.from_dict(res.info).with_extras(shard=sh.index, rank=ctx.rank)
            _write_shard(folder, sh, res, key)
            x = res.x
        if acc is not None:
            _accumulate(acc, features, x, target.device, feature_batch)
    if acc is not None:
        acc = all_reduce_stats(acc, ctx)
    ctx.barrier()
    if not ctx.is_main:
        return None
    x, z, infos = load_shards(out, shards)
    distributed = {
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "shard_size": size,
        "shards": [
            {
                "index": s.index,
                "start": s.start,
                "size": s.size,
                "seed": s.seed,
                "rank": s.index % ctx.world_size,
                "file": f"{_SHARD_DIR}/{s.name}.npz",
            }
            for s in shards
        ],
        "resumed_on_rank0": resumed,
    }
    info = dataclasses.replace(merge_info(infos), wall_time_s=time.perf_counter() - t0).with_extras(
        distributed=distributed
    )
    arrays = {"x": x} if z is None else {"x": x, "z": z}
    dest = Path(out if dest is None else dest)
    with atomic_write(dest / "samples.npz") as f:
        np.savez(f, **arrays)
    if acc is not None:
        mu, sigma = acc.compute()
        save_statistics(dest / "feature_stats.npz", mu, sigma, meta={"n": acc.count, "world_size": ctx.world_size})
        info = info.with_extras(feature_stats={"file": "feature_stats.npz", "n": acc.count, "dim": acc.dim})
    return SampleResult(torch.from_numpy(x), None if z is None else torch.from_numpy(z), info)


@torch.no_grad()
def _accumulate(acc, features, x: torch.Tensor, device, batch: int) -> None:
    for i in range(0, len(x), batch):
        f = features(x[i : i + batch].to(device))
        if f.dim() != 2:
            f = f.flatten(1)
        acc.update(f)
