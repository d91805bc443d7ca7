"""One training loop for every method.

A *method* is an object with ``step(real, *, rng) -> dict[str, float]`` that updates
its own networks on one batch of real data. :func:`fit` shuffles the data each
epoch with the given ``rng``, feeds batches, shows progress bars (the run's, with its ETA,
and the epoch's), and calls ``on_epoch(epoch, history)`` after each epoch (for checkpoints,
sample grids and held-out checks); an ``on_epoch`` that returns ``True`` ends training there.
Data is a tensor (small datasets such as 2-D mixtures) or any iterable of batches
(a ``DataLoader``; a batch may be ``(x, y)``, of which ``x`` is used).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, NonFiniteError

__all__ = ["fit", "iterate_batches", "adam"]


def adam(params, lr: float, betas) -> torch.optim.Adam:
    """The optimiser every training method here uses: Adam with the method's learning rate and betas."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas))


def iterate_batches(
    data, batch_size: int, *, rng: torch.Generator | None, device, drop_last: bool = True
) -> Iterable[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        perm = torch.randperm(len(data), generator=rng, device=rng.device if rng is not None else "cpu").to(data.device)
        stop = len(data) - (len(data) % batch_size if drop_last else 0)
        for i in range(0, max(stop, 0), batch_size):
            yield data[perm[i : i + batch_size]].to(device)
    else:
        for b in data:
            x = b[0] if isinstance(b, (tuple, list)) else b
            yield x.to(device)


def _num_batches(data, batch_size: int) -> int | None:
    if isinstance(data, torch.Tensor):
        return len(data) // batch_size
    try:
        return len(data)
    except TypeError:
        return None


def fit(
    method,
    data,
    *,
    epochs: int,
    batch_size: int,
    rng: torch.Generator | None = None,
    device=None,
    progress: bool = False,
    start_epoch: int = 0,
    on_epoch: Callable[[int, list[dict]], bool | None] | None = None,
    desc: str = "training",
    postfix: Callable[[list[dict]], dict] | None = None,
) -> list[dict]:
    """Train ``method`` for ``epochs`` epochs; returns one dict of mean losses per epoch.

    ``start_epoch`` skips the epochs a resumed run already completed (restore the
    method and ``rng`` first, see :mod:`refine.train.checkpointing`); the returned
    history then covers the new epochs only. The run's progress bar is labelled ``desc``
    and, after each epoch, shows ``postfix(history)``.
    """
    if epochs < 0 or batch_size <= 0:
        raise ConfigError(f"epochs must be >= 0 and batch_size > 0, got {epochs} and {batch_size}")
    if isinstance(data, torch.Tensor) and len(data) < batch_size:
        raise ConfigError(f"the dataset has {len(data)} samples, fewer than one batch of {batch_size}")
    history: list[dict] = []
    nb = _num_batches(data, batch_size)
    run_bar = tqdm(
        total=epochs - start_epoch, desc=desc, unit="epoch", disable=not progress or epochs - start_epoch < 2
    )
    try:
        for epoch in range(start_epoch, epochs):
            logs = _epoch(method, data, epoch, epochs, batch_size, nb, rng=rng, device=device, progress=progress)
            history.append({"epoch": epoch + 1, **logs})
            stop = on_epoch is not None and on_epoch(epoch + 1, history)
            if postfix is not None:
                run_bar.set_postfix(postfix(history), refresh=False)
            run_bar.update()
            if stop:
                break
    finally:
        run_bar.close()
    return history


def _epoch(method, data, epoch: int, epochs: int, batch_size: int, nb, *, rng, device, progress: bool) -> dict:
    """One pass over ``data``; the mean of each logged value."""
    sums: dict[str, float] = {}
    count = 0
    bar = tqdm(
        iterate_batches(data, batch_size, rng=rng, device=device),
        total=nb,
        desc=f"epoch {epoch + 1}/{epochs}",
        disable=not progress,
        leave=False,
    )
    try:
        for real in bar:
            logs = method.step(real, rng=rng)
            for k, v in logs.items():
                if not math.isfinite(v):
                    raise NonFiniteError(f"training diverged: {k} = {v} in epoch {epoch + 1}; lower the learning rate")
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if count % 20 == 0:
                bar.set_postfix({k: f"{v / count:.3f}" for k, v in sums.items()})
    finally:  # an interrupt leaves no half-drawn bar behind the error message
        bar.close()
    return {k: v / max(count, 1) for k, v in sums.items()}
