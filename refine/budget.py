"""What a run will cost, known before it starts: passes through the networks and memory.

Every sampler declares its work (:meth:`refine.samplers.Sampler.planned_evals`, generator
passes with a backward pass counted as two) and how many latents and samples it holds at
once (:meth:`~refine.samplers.Sampler.rows_in_memory`). With the size of one sample and
its latent, that gives the memory a call needs: its working rows plus the ``n`` results it
returns. :func:`check` refuses, in one line that gives the estimate and what to change, a
call whose work per sample is beyond any sensible setting or whose memory exceeds what the
machine has free; ``Sampler.sample`` runs it before any work. ``refine sample`` streams a
large ``n`` to disk in chunks (:func:`chunk_rows`), so its memory does not grow with ``n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError
from .fs import available_memory, format_bytes

__all__ = ["Estimate", "estimate", "check", "chunk_rows", "MAX_PASSES_PER_SAMPLE", "CHUNK_BYTES"]

#: Generator passes per output sample above which a setting is refused as a mistake
#: (e.g. ``k=10**12`` proposals per MH chain); the slowest useful settings in the
#: literature (DDLS with 1,000 Langevin steps, SIR with 1,000 candidates) spend a few thousand.
MAX_PASSES_PER_SAMPLE = 10**6
#: Bytes of results ``refine sample`` holds per chunk before it writes them to disk.
CHUNK_BYTES = 64 << 20
_FLOAT = 4  # samples and latents are kept as float32


@dataclass(frozen=True)
class Estimate:
    """The planned cost of drawing ``n`` samples with one sampler."""

    method: str
    n: int
    passes: float  # generator passes in all (a backward pass counts as two)
    row_bytes: int  # one sample with its latent
    work_rows: int  # rows the method holds while it works
    work_factor: int  # copies of a working row alive at once (gradients, proposals, ...)

    @property
    def passes_per_sample(self) -> float:
        return self.passes / self.n

    @property
    def memory_bytes(self) -> int:
        # the results: the method's list of batches and their concatenation
        return 2 * self.n * self.row_bytes + self.work_factor * self.work_rows * self.row_bytes


def _row_bytes(target) -> int:
    gen = target.generator
    return _FLOAT * (math.prod(gen.latent_shape) + math.prod(gen.sample_shape))


def estimate(sampler, target, n: int) -> Estimate:
    """The passes and memory of ``sampler.sample(target, n)``, from declarations and shapes only."""
    return Estimate(
        method=sampler.name or type(sampler).__name__,
        n=int(n),
        passes=float(sampler.planned_evals(int(n))),
        row_bytes=_row_bytes(target),
        work_rows=int(sampler.rows_in_memory()),
        work_factor=4 if sampler.needs_gradients else 2,
    )


def _settings(sampler) -> str:
    opts = sampler.options()
    shown = [f"{k}={v}" for k, v in opts.items() if isinstance(v, int) and not isinstance(v, bool) and v > 1]
    return f" ({', '.join(shown)})" if shown else ""


def check(sampler, target, n: int, *, memory: int | None = None) -> Estimate:
    """:func:`estimate`, refused with a one-line :class:`ConfigError` when it cannot be run.

    ``memory``: the bytes the call may take (default: what the machine has free now).
    """
    est = estimate(sampler, target, n)
    if est.passes_per_sample > MAX_PASSES_PER_SAMPLE:
        raise ConfigError(
            f"{est.method}{_settings(sampler)} would spend {est.passes_per_sample:.3g} generator passes per sample "
            f"({est.passes:.3g} for {n} samples), more than refine runs ({MAX_PASSES_PER_SAMPLE:.0e}); "
            "lower the option that multiplies the work"
        )
    limit = available_memory() if memory is None else int(memory)
    if est.memory_bytes > limit:
        work = est.work_factor * est.work_rows * est.row_bytes
        if work > limit // 2:
            remedy = f"lower the rows it holds at once{_settings(sampler)}"
        else:
            remedy = "draw fewer samples per call (refine sample streams any n to disk in chunks)"
        raise ConfigError(
            f"{est.method} with n={n} needs about {format_bytes(est.memory_bytes)} of memory "
            f"({format_bytes(est.row_bytes)} per sample and latent), {format_bytes(limit)} is free here; {remedy}"
        )
    return est


def chunk_rows(target, n: int, *, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Samples per chunk when streaming ``n`` to disk: at most ``chunk_bytes`` of results at a time."""
    return int(min(n, max(1, chunk_bytes // _row_bytes(target))))
