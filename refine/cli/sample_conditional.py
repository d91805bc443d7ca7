"""``refine sample`` on a class-conditional checkpoint (``refine train --method cgan``): one class at a time.

The run has the structure of an unconditional one (every check before the first byte, files
staged in a :class:`~refine.outputs.RunFolder`, chunks streamed into ``samples.npz``), looped
over the classes of :func:`refine.conditional.class_plan`: class ``c`` is sampled from its own
target ``z -> G(z, c)`` with ratio ``log r(x | c)``, on the seed ``shard_seed(seed, c)`` (its
chunks on ``chunk_seed`` of that), so the class counts are exact and each class's samples do not
depend on which other classes were asked for. ``samples.npz`` holds ``x``, ``z`` and ``y`` (int64);
run.json's ``info`` has the per-class records; the picture has one row per class. The ratio is
the checkpoint's conditional discriminator, or ``--ratio`` a conditional ratio file
(``refine fit-ratio --kind feature-sp --conditional``).
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import typer

from ..budget import check as check_budget
from ..budget import chunk_rows
from ..checks import check_gradients, gradients_through_generator
from ..conditional import (
    ConditionalGenerator,
    ConditionalRatio,
    ConditionalTarget,
    _merge_info,
    class_plan,
    parse_classes,
    probe,
)
from ..distributed import shard_seed
from ..errors import ConfigError, RefineError
from ..io import file_sha256, load_ratio, safe_load
from ..outputs import RunFolder, check_disk_space
from ..plot import save_image_grid
from ..stream import merged_info, sample_chunks
from .common import command_line, prepare_out_dir, timestamp, versions
from .inputs import load_inputs

__all__ = ["check_conditional_request", "is_conditional_checkpoint", "sample_conditional_run"]

#: Samples per class in the picture.
PICTURE_PER_CLASS = 8


def is_conditional_checkpoint(path: Path | None) -> bool:
    """Whether ``path`` is a refine checkpoint of a class-conditional pair (errors are left to the loader)."""

    if path is None or not Path(path).is_file():
        return False
    try:
        obj = safe_load(path)
    except RefineError:
        return False
    return isinstance(obj, dict) and obj.get("conditional") is not None


def check_conditional_request(
    *, conditional: bool, classes: str | None, ckpt, fmt: str, distributed: bool, feature_stats, ratio, foreign
) -> None:
    """One-line errors, before anything is read or written, for what a conditional run does not support."""
    if not conditional:
        if classes is not None:
            raise ConfigError(
                f"--classes applies to class-conditional checkpoints (refine train --method cgan); {ckpt or 'the default checkpoint'} is unconditional"
            )
        return
    if distributed or feature_stats is not None:
        raise ConfigError(
            "--distributed and --feature-stats are not supported for class-conditional checkpoints yet; run on one process"
        )
    if foreign is not None and (foreign.generator_flags() or foreign.disc is not None):
        raise ConfigError(
            "foreign-network options apply to unconditional generators; a class-conditional refine checkpoint declares its own networks"
        )


def sample_conditional_run(
    sampler,
    *,
    method: str,
    n: int,
    ckpt: Path,
    classes: str | None,
    seed: int,
    ratio: Path | None = None,
    dev,
    out: Path,
    progress: bool,
    replay=None,
    fmt: str = "npz",
) -> None:
    """The whole conditional ``refine sample`` run into ``out``, in the format ``fmt`` (``npz``: x, z and y;
    ``npz-uint8``: arr_0 images and arr_1 labels; ``png``: one subfolder of images per class)."""
    from .sample import FORMAT_FILES, _check_image_format, _writer

    out = prepare_out_dir(out)
    with RunFolder(out) as run:
        inputs = load_inputs(ckpt, None, dev, need_ratio=method != "none" and ratio is None, samplers=[])
        gen = inputs.gan.generator
        if not isinstance(gen, ConditionalGenerator):  # pragma: no cover - checked by is_conditional_checkpoint
            raise ConfigError(f"{ckpt} is not a class-conditional checkpoint")
        cond_ratio = inputs.ratio if ratio is None else _conditional_ratio_file(ratio, gen, dev, inputs.provenance)
        target = ConditionalTarget(gen, cond_ratio)
        if fmt != "npz":
            _check_image_format(fmt, gen.at(0), single_process=True)
        plan = class_plan(
            n, parse_classes("balanced" if classes is None else classes, gen.num_classes), gen.num_classes
        )
        if sampler.needs_gradients:
            first = target.at(plan[0][0])
            check_gradients(
                first.generator, first.ratio, method=method, through_generator=gradients_through_generator(sampler)
            )
        chunks, row_bytes = {}, 0
        for c, m in plan:  # work and memory of every class, before anything is drawn
            chunks[c] = chunk_rows(target.at(c), m)
            row_bytes = check_budget(sampler, target.at(c), chunks[c]).row_bytes
        check_disk_space(out, n * (row_bytes + 8) + (64 << 20), f"{n} samples")
        t0 = time.perf_counter()
        infos, picture = [], []
        with _writer(fmt, run, n, gen.output_range) as writer:
            for c, m in plan:
                class_infos = []
                for res in sample_chunks(
                    sampler, target.at(c), m, seed=shard_seed(seed, c), chunk=chunks[c], progress=progress
                ):
                    arrays = {"x": res.x.detach().float().cpu().numpy()}
                    if res.z is not None:
                        arrays["z"] = res.z.detach().float().cpu().numpy()
                    if fmt != "npz":  # npz gets y as one array at the end (below)
                        arrays["y"] = np.full(len(res.x), c, dtype=np.int64)
                    writer.write(**arrays)
                    class_infos.append(res.info)
                    if len(picture) <= len(infos):
                        picture.append(res.x[:PICTURE_PER_CLASS].detach().cpu())
                infos.append({**merged_info(class_infos, chunk=chunks[c]), "class": c, "seed": shard_seed(seed, c)})
        if fmt == "npz":
            _append_labels(run.path(FORMAT_FILES["npz"]), plan)
        info = {**_merge_info(method, plan, infos), "seed": seed, "wall_time_s": time.perf_counter() - t0}
        if picture and picture[0].dim() == 4:
            save_image_grid(
                run.path("samples.png"), _rows(picture), output_range=gen.output_range, nrow=PICTURE_PER_CLASS
            )
        record = {
            "command": command_line(),
            "method": method,
            "options": sampler.options(),
            "n": n,
            "seed": seed,
            "format": fmt,
            "classes": [c for c, _ in plan],
            "config": None if replay is None else replay.record,
            "device": str(dev),
            "inputs": inputs.provenance,
            "dataset": inputs.dataset,
            "info": info,
            "versions": versions(),
            "time": timestamp(),
        }
        files = run.commit(record)
    rate = f", acceptance {info['acceptance_rate']:.3f}" if "acceptance_rate" in info else ""
    typer.echo(
        f"{method}: {n} samples over {len(plan)} classes in {info['wall_time_s']:.2f}s{rate} -> {out}/{', '.join(files)}, run.json"
    )


def _conditional_ratio_file(path: Path, gen: ConditionalGenerator, dev, provenance: dict) -> ConditionalRatio:
    """``--ratio`` of a conditional run: a conditional ratio file for the generator's classes, probed on two of its samples."""

    r = load_ratio(path, device=dev)
    if not isinstance(r, ConditionalRatio):
        raise ConfigError(
            f"--ratio {path} is a ratio of one distribution ({type(r).__name__}); a class-conditional checkpoint takes a conditional "
            "ratio r(x | y): fit one with `refine fit-ratio --conditional` (--kind discriminator or feature-sp)"
        )
    if r.num_classes != gen.num_classes:
        raise ConfigError(f"--ratio {path} knows {r.num_classes} classes but the generator {gen.num_classes}")
    probe(gen, r)
    provenance["ratio"] = {"path": str(path), "sha256": file_sha256(path)}
    return r


def _append_labels(path: Path, plan: list[tuple[int, int]], block: int = 1 << 20) -> None:
    """Add ``y.npy`` (int64, one class index per row, in plan order) to the staged ``samples.npz``, in blocks."""
    n = sum(m for _, m in plan)
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_STORED, allowZip64=True) as zf,
        zf.open("y.npy", "w", force_zip64=True) as f,
    ):
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int64)), "fortran_order": False, "shape": (n,)}
        )
        for c, m in plan:
            for i in range(0, m, block):
                f.write(np.full(min(block, m - i), c, dtype=np.int64).tobytes())


def _rows(picture: list[torch.Tensor]) -> torch.Tensor:
    """One row per class, padded with blank images where a class has fewer than a row."""
    rows = []
    for x in picture:
        if len(x) < PICTURE_PER_CLASS:
            x = torch.cat([x, torch.zeros((PICTURE_PER_CLASS - len(x), *x.shape[1:]), dtype=x.dtype)])
        rows.append(x)
    return torch.cat(rows)
