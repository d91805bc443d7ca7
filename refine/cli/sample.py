"""``refine sample``: refined samples from a checkpoint, with a record of how they were made."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import typer

from ..budget import check as check_budget
from ..budget import chunk_rows
from ..data.images import is_image_spec, real_images_like
from ..data.toy2d import MIXTURES, get_mixture
from ..distributed import init as dist_init
from ..distributed import launched_distributed, sample_sharded
from ..errors import ConfigError
from ..eval import load_feature_space, to_uint8
from ..outputs import SAMPLE_FORMATS, NpzWriter, PngFolderWriter, RunFolder, Uint8NpzWriter, check_disk_space
from ..plot import save_image_grid, save_scatter_panels
from ..samplers import get_sampler, parse_options
from ..samplers.base import SampleResult
from ..stream import chunk_seed, merged_info, sample_chunks
from ..target import LatentTarget
from ..tune.config import replay_config
from ..validate import MAX_SAMPLES, as_int
from .app import app
from .common import cli_errors, command_line, make_rng, prepare_out_dir, resolve_device, timestamp, versions
from .inputs import Foreign, foreign_options, load_inputs
from .sample_balanced import check_balance_request, load_balance, sample_balanced_run

#: Points in the 2-D picture (of the first chunk): enough to see every mode, quick to draw.
PICTURE_POINTS = 20_000


def save_picture(
    path: Path, x: torch.Tensor, *, title: str, output_range: str, dataset: str | None, real: torch.Tensor | None = None
) -> None:
    if x.dim() == 2 and x.shape[1] == 2:
        panels = {}
        if real is not None:
            panels["real"] = real.cpu().numpy()
        panels[title] = x[:PICTURE_POINTS].cpu().numpy()
        means = get_mixture(dataset).means if dataset in MIXTURES else None
        save_scatter_panels(path, panels, means=means)
    elif x.dim() == 4:
        save_image_grid(path, x[:64], output_range=output_range)


def _arrays(result) -> dict[str, np.ndarray]:
    arrays = {"x": result.x.detach().float().cpu().numpy()}
    if result.z is not None:
        arrays["z"] = result.z.detach().float().cpu().numpy()
    return arrays


@app.command()
@cli_errors
@foreign_options
def sample(
    method: str = typer.Option("none", "--method", "-m", help="sampler: see `refine list`"),
    n: int = typer.Option(10000, "-n", "--n", help="number of output samples"),
    ckpt: Optional[Path] = typer.Option(None, "--ckpt", help="GAN checkpoint (default: the shipped 25-Gaussian GAN)"),
    ratio: Optional[Path] = typer.Option(
        None,
        "--ratio",
        help="density-ratio file from `refine fit-ratio` (default: the shipped fitted ratio, or the checkpoint's discriminator)",
    ),
    option: list[str] = typer.Option(
        [], "--option", "-o", help="method option key=value (repeatable), e.g. -o gamma=80"
    ),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
    out: Path = typer.Option(Path("runs/sample"), "--out", help="output folder: samples.npz, run.json, samples.png"),
    fmt: str = typer.Option(
        "npz",
        "--format",
        help="samples file: npz (float x and z, samples.npz), npz-uint8 (ADM/EDM: arr_0, NHWC uint8, samples_uint8.npz) or png (folder samples/, one file per sample); the last two for images",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    distributed: bool = typer.Option(
        False,
        "--distributed",
        help="shard the work across the processes torchrun starts (on by itself when WORLD_SIZE > 1); one process without torchrun",
    ),
    shard_size: Optional[int] = typer.Option(
        None,
        "--shard-size",
        help="samples per shard with --distributed (default n / processes); a fixed size gives the same result for any number of processes",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="with --distributed: keep shards already in --out/shards that this exact run wrote"
    ),
    feature_stats: Optional[str] = typer.Option(
        None,
        "--feature-stats",
        help="images: also write feature_stats.npz (mu, sigma: pytorch-fid format) of the samples in this feature space, 'inception' (weights from $REFINE_INCEPTION_WEIGHTS or the torch hub cache) or a classifier file; reduced across processes",
    ),
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        help="replay a setting chosen by `refine tune` (its config.json): method, options, files and seed",
    ),
    classes: Optional[str] = typer.Option(
        None,
        "--classes",
        help="class-conditional checkpoints (refine train --method cgan): 'balanced' (the default: n/K per class) or class indices such as 3,7 (n split evenly); samples.npz gets y",
    ),
    balance_classifier: Optional[Path] = typer.Option(
        None,
        "--balance-classifier",
        help="unconditional generators: keep the refined class histogram at --balance-probs by stratified acceptance on this classifier's predicted classes (a refine train-classifier file); samples.npz gets y",
    ),
    balance_probs: Optional[str] = typer.Option(
        None,
        "--balance-probs",
        help="with --balance-classifier: uniform (the default), data (the label frequencies of the classifier's training split) or comma-separated class probabilities",
    ),
    foreign: Foreign = None,
) -> None:
    """Draw N refined samples with METHOD and write them, a run record and a picture to --out.

    Every check (options, seed, inputs, work, memory and disk) runs before the first byte
    is written; the files are staged and put in place together, run.json last, so a failed
    run leaves --out as it was, and a folder another run is writing is refused. A large N
    is drawn in chunks and streamed to disk, so memory does not grow with N.
    """
    replay = None
    if config is not None:  # fills the arguments from the file; ones also given must agree with it
        replay = replay_config(config, method=method, option=option, ckpt=ckpt, ratio=ratio, seed=seed, foreign=foreign)
        method, option, ckpt, ratio, seed, foreign = (
            replay.method,
            replay.option,
            replay.ckpt,
            replay.ratio,
            replay.seed,
            replay.foreign,
        )
    sampler = get_sampler(method, **parse_options(option))
    n = as_int(n, "-n", minimum=1, maximum=MAX_SAMPLES)
    if fmt not in SAMPLE_FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}; choose one of {', '.join(SAMPLE_FORMATS)}")
    make_rng(seed)  # the seed's range, checked before anything is loaded
    from .sample_conditional import check_conditional_request, is_conditional_checkpoint, sample_conditional_run

    conditional = is_conditional_checkpoint(ckpt)
    check_conditional_request(
        conditional=conditional,
        classes=classes,
        ckpt=ckpt,
        fmt=fmt,
        distributed=distributed or launched_distributed() or resume,
        feature_stats=feature_stats,
        ratio=ratio,
        foreign=foreign,
    )
    check_balance_request(
        classifier=balance_classifier,
        probs=balance_probs,
        conditional=conditional,
        fmt=fmt,
        distributed=distributed or launched_distributed() or resume,
        feature_stats=feature_stats,
        config=config,
    )
    dev = resolve_device(device)
    balance = None
    if balance_classifier is not None:  # loaded (and data frequencies read) before any sampling
        balance = load_balance(balance_classifier, balance_probs, dev)
    if conditional:  # one class at a time, in the same staged run folder
        return sample_conditional_run(
            sampler,
            method=method,
            n=n,
            ckpt=ckpt,
            classes=classes,
            seed=seed,
            ratio=ratio,
            dev=dev,
            out=out,
            progress=progress,
            replay=replay,
            fmt=fmt,
        )
    ctx = None
    if distributed or launched_distributed() or feature_stats is not None:
        ctx = dist_init(dev)
        dev = ctx.device
    elif resume:
        raise ConfigError(
            "--resume keeps the shards of an interrupted --distributed run; add --distributed (one process is fine)"
        )
    main = ctx is None or ctx.is_main
    out = prepare_out_dir(out) if main else Path(out)  # one writability probe, not one per rank
    with RunFolder(out) if main else contextlib.nullcontext() as run:  # one writer per folder
        try:
            inputs = load_inputs(ckpt, ratio, dev, need_ratio=method != "none", samplers=[sampler], foreign=foreign)
            target = LatentTarget(inputs.gan.generator, inputs.ratio)  # gradients checked in load_inputs
            if fmt != "npz":
                _check_image_format(fmt, inputs.gan.generator, single_process=ctx is None)
            chunk = chunk_rows(target, n) if ctx is None else n
            est = check_budget(sampler, target, chunk)
            if main:
                check_disk_space(out, n * est.row_bytes + (64 << 20), f"{n} samples")
            real = _real_source(sampler, inputs, target, seed, dev)
            if balance is not None:
                result = sample_balanced_run(
                    sampler,
                    target,
                    n,
                    seed=seed,
                    classifier=balance[0],
                    probs=balance[1],
                    run=run,
                    progress=progress,
                )
            elif ctx is None:
                result = _stream(
                    sampler, target, n, seed=seed, chunk=chunk, real=real, progress=progress, run=run, fmt=fmt
                )
            else:  # shards under out/shards, merged on rank 0
                features = _feature_fn(feature_stats, inputs.gan.generator, dev) if feature_stats is not None else None
                result = sample_sharded(
                    sampler,
                    target,
                    n,
                    seed=seed,
                    out=out,
                    ctx=ctx,
                    shard_size=shard_size,
                    real=real(0, n) if real else None,
                    resume=resume,
                    fingerprint=inputs.provenance,
                    progress=progress and main,
                    features=features,
                    dest=run.staging if main else None,
                )
        finally:
            if ctx is not None:
                ctx.close()
        if result is None:
            return
        record = {
            "command": command_line(),
            "method": method,
            "options": sampler.options(),
            "ratio_temperature": getattr(inputs.ratio, "temperature", None),  # log r = score / T; not the sampler's
            "n": n,
            "seed": seed,
            "format": fmt,
            "config": None if replay is None else replay.record,
            "device": str(dev),
            "inputs": inputs.provenance,
            "dataset": inputs.dataset,
            "info": dict(result.info),
            "balance": None
            if balance is None
            else {
                **balance[2],
                "quotas": result.info["balanced"]["quotas"],
                "class_probs": result.info["balanced"]["class_probs"],
            },
            "versions": versions(),
            "time": timestamp(),
        }
        show = (
            get_mixture(inputs.dataset).sample(min(n, 5000), rng=make_rng(seed + 7))
            if inputs.dataset in MIXTURES
            else None
        )
        save_picture(
            run.path("samples.png"),
            result.x,
            title=method,
            output_range=inputs.gan.generator.output_range,
            dataset=inputs.dataset,
            real=show,
        )
        files = run.commit(record)
    info = result.info
    rate = f", acceptance {info['acceptance_rate']:.3f}" if "acceptance_rate" in info else ""
    rate += cap_note(info)
    typer.echo(
        f"{method}: {n} samples in {info.get('wall_time_s', 0):.2f}s{rate}, {info.get('g_evals_per_sample', 0):.1f} G evals/sample -> {out}/{', '.join(files)}, run.json"
    )


def cap_note(info) -> str:
    """rs that capped r (its default bound where exact rs could not finish): what the summary line says of it.

    A conditional run's classes (``per_class``) and a merged run's shards (``per_shard``) are
    counted one by one.
    """
    if info.get("per_class"):
        parts = [(r.get("bound_quantile"), r.get("capped_mass")) for r in info["per_class"].values()]
        unit = "classes"
    else:
        shards = info.get("per_shard", {})
        size = max([len(v) for k, v in shards.items() if k in ("bound_quantile", "capped_mass")], default=1)

        def column(key):
            return shards[key] if key in shards else [info.get(key)] * size

        parts, unit = list(zip(column("bound_quantile"), column("capped_mass"))), "parts"
    capped = [(q, m) for q, m in parts if q is not None and q < 1.0]
    if not capped:
        return ""
    q = "/".join(f"{v:g}" for v in sorted({q for q, _ in capped}))
    of = "" if len(parts) == 1 else f" in {len(capped)} of {len(parts)} {unit}"
    return f" (r capped at its {q} quantile{of}, capped mass up to {max(m for _, m in capped):.2g})"


def _real_source(sampler, inputs, target, seed: int, dev) -> Callable[[int, int], torch.Tensor | None] | None:
    """Held-out real samples per chunk where the method needs them: MH chains with init=real
    start at them (one per sample), DCD's critic fine-tuning trains on them."""
    if sampler.real_rows(1) == 0:
        return None

    def real(index: int, size: int) -> torch.Tensor | None:
        rows, rng = sampler.real_rows(size), make_rng(chunk_seed(seed + 1_000_003, index))
        if inputs.dataset in MIXTURES:
            return get_mixture(inputs.dataset).sample(rows, rng=rng).to(dev)
        if is_image_spec(inputs.dataset):  # held-out (test split) images of the checkpoint's dataset
            return real_images_like(inputs.dataset, target.generator.sample_shape, rows, rng=rng, device=dev)
        return None

    return real


#: Where each --format puts the samples in --out.
FORMAT_FILES = {"npz": "samples.npz", "npz-uint8": "samples_uint8.npz", "png": "samples"}


def _check_image_format(fmt: str, generator, *, single_process: bool) -> None:
    """--format npz-uint8 and png hold 8-bit images: refuse, before anything is drawn, a generator they cannot hold."""
    shape = tuple(generator.sample_shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ConfigError(
            f"--format {fmt} writes 8-bit images (1 or 3 channels, C x H x W); this generator's samples have shape {shape}; use --format npz"
        )
    if generator.output_range not in ("[-1,1]", "[0,1]"):
        raise ConfigError(
            f"--format {fmt} converts images from their declared value range; this generator's output range is "
            f"{generator.output_range!r}; declare it (--output-range [-1,1] or [0,1]) or use --format npz"
        )
    if not single_process:
        raise ConfigError(
            f"--format {fmt} is written by one process; --distributed and --feature-stats write samples.npz (use --format npz)"
        )


def _writer(fmt: str, run: RunFolder, n: int, output_range: str):
    """The streaming writer of ``fmt`` into the run's staging folder (same interface: write(**chunk), close(), abort())."""
    path = run.path(FORMAT_FILES[fmt])
    if fmt == "npz":
        return NpzWriter(path, n)
    if fmt == "npz-uint8":
        return Uint8NpzWriter(path, n, output_range=output_range)
    return PngFolderWriter(path, n, output_range=output_range)


def _stream(
    sampler, target, n: int, *, seed: int, chunk: int, real, progress: bool, run: RunFolder, fmt: str = "npz"
) -> SampleResult:
    """Draw ``n`` samples chunk by chunk into the run's ``fmt`` file; return the first chunk (for the picture) with the merged record."""
    t0 = time.perf_counter()
    first, infos = None, []
    with _writer(fmt, run, n, target.generator.output_range) as writer:
        for res in sample_chunks(sampler, target, n, seed=seed, chunk=chunk, real=real, progress=progress):
            writer.write(**_arrays(res))
            infos.append(res.info)
            if first is None:
                first = res
    return SampleResult(first.x, first.z, merged_info(infos, chunk=chunk, wall_time_s=time.perf_counter() - t0))


def _feature_fn(space_name: str, generator, dev):
    """Images in the generator's declared range -> features of the named space (as `refine eval` computes them)."""
    if generator.output_range not in ("[-1,1]", "[0,1]"):
        raise ConfigError(
            f"--feature-stats needs image samples with a declared value range; this generator's output range is {generator.output_range!r}"
        )
    space = load_feature_space(space_name, device=dev)
    return lambda x: space.extract(to_uint8(x, generator.output_range))[0]
