"""Drawing a large ``n`` in chunks, so that memory does not grow with ``n``.

Chunk ``i`` holds samples ``[i * size, (i + 1) * size)``. Chunk 0 is drawn with ``seed``
itself, so a run of ``n <= size`` samples is the same as one call of the sampler with that
seed; chunk ``i > 0`` with :func:`refine.distributed.shard_seed` ``(seed, i)``, a hash that
keeps the streams of different chunks independent. The result depends on ``n``, ``seed``
and the chunk size only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

import torch
from tqdm.auto import tqdm

from .distributed import merge_info, shard_seed
from .samplers.base import SampleResult

__all__ = ["chunk_seed", "sample_chunks", "merged_info"]


def chunk_seed(seed: int, index: int) -> int:
    """The seed of chunk ``index`` of a run with ``seed``."""
    return int(seed) if index == 0 else shard_seed(int(seed), int(index))


def sample_chunks(
    sampler,
    target,
    n: int,
    *,
    seed: int,
    chunk: int,
    real: Callable[[int, int], torch.Tensor | None] | None = None,
    progress: bool = False,
) -> Iterator[SampleResult]:
    """Yield the results of ``sampler`` chunk by chunk (``n`` samples in all).

    ``real(index, size)`` gives the held-out real samples chunk ``index`` of ``size``
    samples needs (MH chains started at real data, DCD's critic fine-tuning), or None.
    """
    starts = list(range(0, n, chunk))
    outer = tqdm(total=n, desc=f"{sampler.name} (chunks)", unit="sample", disable=not progress or len(starts) == 1)
    try:
        for i, start in enumerate(starts):
            size = min(chunk, n - start)
            rng = torch.Generator(device="cpu").manual_seed(chunk_seed(seed, i))
            part = real(i, size) if real is not None else None
            yield sampler.sample(target, size, rng=rng, progress=progress and len(starts) == 1, real=part)
            outer.update(size)
    finally:
        outer.close()


def merged_info(infos: list[Mapping], *, chunk: int, wall_time_s: float | None = None) -> Mapping:
    """One record for a chunked run; a single chunk's record is kept as it is."""
    if len(infos) == 1:
        return infos[0]
    info = merge_info(infos)
    extras = {k: v for k, v in info.extras.items() if wall_time_s is not None or k != "shard_time_s_sum"}
    extras["chunks"] = {"count": len(infos), "size": int(chunk)}
    return dataclasses.replace(
        info, wall_time_s=info.wall_time_s if wall_time_s is None else wall_time_s, extras=extras
    )
