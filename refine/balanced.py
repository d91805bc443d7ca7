"""Balanced refinement of unconditional generators: the refined class histogram held at a target.

A density ratio that favours some classes (DRE-F-SP on MNIST over-samples some digits) moves
the class histogram of the refined samples away from the data's. With a classifier (a module
mapping samples to logits ``(N, K)``), :func:`sample_balanced` stratifies the refined samples by
predicted class: it runs the sampler in rounds, classifies each round's samples, and keeps them
per predicted class until every class ``c`` has its quota ``n_c`` (:func:`class_quotas`: the
largest-remainder rounding of ``n * p_c``, summing exactly to ``n``). Samples of a class whose
quota is full are dropped. The refined distribution within each predicted class is the sampler's;
only the class weights change, to ``p``.

Round ``r`` runs the sampler with a generator seeded by
``refine.distributed.shard_seed(seed, r)``, and rounds are consumed in order, so a run is
reproducible from its seed. The result is ordered class by class (class ``0`` first), and
within a class in arrival order (round by round, in the sampler's order); ``y`` holds each
sample's predicted class.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .distributed import shard_seed
from .errors import BudgetExceededError, ConfigError, ShapeError
from .generator import LatentGenerator
from .samplers.base import SampleInfo, SampleResult
from .target import LatentTarget
from .validate import MAX_SAMPLES, as_int

__all__ = ["BalancedSampleResult", "class_quotas", "classify", "sample_balanced"]

#: Rounds a balanced run may take by default before it gives up on the classes still short.
DEFAULT_MAX_ROUNDS = 50


@dataclass
class BalancedSampleResult(SampleResult):
    """A :class:`SampleResult` with the predicted class ``y`` ``(N,)`` of every sample, grouped by class."""

    y: torch.Tensor | None = None


def _probs(class_probs, num_classes: int | None) -> list[float]:
    if class_probs is None or (isinstance(class_probs, str) and class_probs == "uniform"):
        if num_classes is None:
            raise ConfigError("uniform class probabilities need num_classes (or pass class_probs)")
        k = as_int(num_classes, "num_classes", minimum=1, maximum=100_000)
        return [1.0 / k] * k
    if isinstance(class_probs, str):
        raise ConfigError(f"class_probs={class_probs!r}: expected 'uniform' or a sequence of K probabilities")
    p = torch.as_tensor(class_probs, dtype=torch.float64).flatten()
    if p.numel() == 0 or not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or float(p.sum()) <= 0:
        raise ConfigError("class_probs must be finite, non-negative and not all zero")
    if num_classes is not None and p.numel() != num_classes:
        raise ConfigError(f"class_probs has {p.numel()} entries but the classifier has {num_classes} classes")
    return (p / p.sum()).tolist()


def class_quotas(n: int, class_probs: Sequence[float]) -> list[int]:
    """Per-class counts ``round(n * p_c)`` that sum exactly to ``n``: the largest-remainder rounding.

    Each class gets ``floor(n * p_c)``; the samples left over go one each to the classes with the
    largest fractional parts (ties to the lower class index). ``class_probs`` is normalised first.
    """
    n = as_int(n, "number of samples", minimum=1, maximum=MAX_SAMPLES)
    p = _probs(class_probs, None)
    exact = [n * q for q in p]
    quotas = [math.floor(e) for e in exact]
    left = n - sum(quotas)
    order = sorted(range(len(p)), key=lambda c: (-(exact[c] - quotas[c]), c))
    for c in order[:left]:
        quotas[c] += 1
    return quotas


def classify(classifier: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, batch: int = 1024) -> torch.Tensor:
    """Predicted classes ``(N,)`` (argmax of the logits) of ``x``, in batches and without gradients."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = classifier(x[i : i + batch])
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(x[i : i + batch]):
                raise ShapeError(
                    f"the classifier returned {type(logits).__name__} {tuple(getattr(logits, 'shape', ()))} "
                    f"for {len(x[i : i + batch])} samples; expected logits (N, K)"
                )
            out.append(logits.argmax(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def _num_classes(classifier, target) -> int:
    """K from the classifier's logits on two samples of the generator (one line if it does not take them)."""
    gen = target.generator
    z = gen.prior.sample(2, rng=torch.Generator().manual_seed(0), device=gen.device)
    with torch.no_grad():
        x = gen(z)
        try:
            logits = classifier(x)
        except (RuntimeError, TypeError, ValueError, IndexError) as e:
            raise ShapeError(
                f"the classifier ({type(classifier).__name__}) cannot be called on the generator's samples "
                f"{tuple(x.shape)}: {(str(e).splitlines() or [type(e).__name__])[0][:160]}"
            ) from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 2:
        raise ShapeError(
            f"the classifier returned {type(logits).__name__} {tuple(getattr(logits, 'shape', ()))} "
            "for 2 samples; expected logits (2, K)"
        )
    return int(logits.shape[1])


def _round_size(n: int, quotas: list[int], have: list[int], predicted: list[int], drawn: int) -> int:
    """The next round's size: enough to fill the slowest class at the rates seen so far, with a
    10 % margin, between ``min(n, 64)`` and ``n``; ``n`` while a short class has not been seen."""
    if drawn == 0:
        return n
    need = 0.0
    for q, h, m in zip(quotas, have, predicted):
        if h < q:
            if m == 0:
                return n
            need = max(need, (q - h) * drawn / m)
    return int(min(n, max(min(n, 64), math.ceil(1.1 * need))))


def sample_balanced(
    sampler,
    target,
    n: int,
    *,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    class_probs=None,
    rng: torch.Generator | None = None,
    seed: int | None = None,
    batch: int | None = None,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    max_drawn: int | None = None,
    progress: bool = False,
    real: torch.Tensor | None = None,
) -> BalancedSampleResult:
    """``n`` samples of ``sampler`` on ``target`` with ``class_quotas(n, class_probs)`` per predicted class.

    Parameters
    ----------
    sampler, target:
        Any registered sampler (``refine.get_sampler``) and what :func:`refine.wrap` returned
        (a :class:`LatentTarget`, or a plain generator for method ``"none"``).
    classifier:
        A module (or callable) mapping a batch of samples, as the generator returns them, to
        logits ``(N, K)``; the predicted class is the argmax. It is called without gradients
        and as given (mode and device are the caller's).
    class_probs:
        The target class proportions ``(K,)`` (normalised; e.g. the data's label frequencies),
        or ``None``/``"uniform"`` for ``1 / K`` each.
    rng, seed:
        Without ``seed``, one is drawn from ``rng``; round ``r`` runs on
        ``shard_seed(seed, r)``.
    batch:
        Samples the sampler is asked for per round. Default: ``n`` in the first round, then
        enough to fill the slowest class at the class rates seen so far, with a 10 % margin
        (between ``min(n, 64)`` and ``n``); a deterministic function of the earlier rounds.
    max_rounds, max_drawn:
        The budget: at most ``max_rounds`` rounds and (if given) ``max_drawn`` samples drawn from
        the sampler in all. When it is spent with a class short of its quota, a
        :class:`BudgetExceededError` names the starved classes, with their counts.

    Returns
    -------
    A :class:`BalancedSampleResult`: ``x`` (and ``z`` where the method keeps latents) ordered
    class by class, in arrival order within a class; ``y`` the predicted classes; ``info`` the
    rounds' :class:`SampleInfo` records merged (the cost of every sample drawn, kept or not),
    with ``n`` the samples returned and the extras ``balanced`` (quotas, class probabilities,
    samples drawn and kept per predicted class, the per-class acceptance of the stratification,
    rounds, classifier passes and the seed).
    """
    n = as_int(n, "number of samples", minimum=1, maximum=MAX_SAMPLES)
    if not callable(classifier):
        raise ConfigError(f"classifier must map samples to logits (N, K), got {type(classifier).__name__}")
    fixed = batch is not None
    batch = as_int(batch, "batch", minimum=1, maximum=MAX_SAMPLES) if fixed else n
    max_rounds = as_int(max_rounds, "max_rounds", minimum=1, maximum=1_000_000)
    if max_drawn is not None:
        max_drawn = as_int(max_drawn, "max_drawn", minimum=1, maximum=2**62)
    if real is not None and sampler.real_per_sample:
        raise ConfigError(
            f"method {sampler.name} takes one real sample per output sample; balanced sampling does not split real= over rounds"
        )
    if isinstance(target, LatentGenerator):
        if sampler.name != "none":
            raise ConfigError(
                f"method {sampler.name!r} needs a density ratio: wrap the generator with discriminator= (and output=) or ratio="
            )
        target = LatentTarget(target)
    if not isinstance(target, LatentTarget):
        raise ConfigError(
            f"balanced sampling needs what refine.wrap returns for an unconditional generator, got {type(target).__name__}"
        )
    k = _num_classes(classifier, target)
    p = _probs(class_probs, k)
    quotas = class_quotas(n, p)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,), generator=rng))
    seed = as_int(seed, "seed", minimum=0, maximum=2**63 - 1)

    t0 = time.perf_counter()
    kept_x: list[list[torch.Tensor]] = [[] for _ in range(k)]
    kept_z: list[list[torch.Tensor]] = [[] for _ in range(k)]
    have = [0] * k
    predicted = [0] * k
    infos: list[SampleInfo] = []
    keep_z = True
    drawn = rounds = 0
    sizes: list[int] = []
    while any(h < q for h, q in zip(have, quotas)):
        size = batch if fixed else _round_size(n, quotas, have, predicted, drawn)
        if max_drawn is not None:
            size = min(size, max_drawn - drawn)
        if rounds >= max_rounds or size <= 0:
            starved = [c for c in range(k) if have[c] < quotas[c]]
            detail = ", ".join(f"{c} ({have[c]} of {quotas[c]}, {predicted[c]} predicted)" for c in starved)
            raise BudgetExceededError(
                f"balanced sampling filled {sum(have)} of {n} samples in {rounds} rounds ({drawn} drawn); "
                f"classes short of their quota: {detail}; the sampler rarely or never produces them "
                "(raise max_rounds/max_drawn, or lower their class_probs)"
            )
        result = sampler.sample(
            target, size, rng=torch.Generator().manual_seed(shard_seed(seed, rounds)), progress=progress, real=real
        )
        rounds += 1
        sizes.append(size)
        drawn += len(result.x)
        infos.append(SampleInfo.from_dict(result.info))
        y = classify(classifier, result.x).cpu()
        keep_z = keep_z and result.z is not None
        for c in range(k):
            idx = (y == c).nonzero().flatten()
            predicted[c] += len(idx)
            take = idx[: max(quotas[c] - have[c], 0)]
            if len(take):
                kept_x[c].append(result.x[take.to(result.x.device)])
                if keep_z:
                    kept_z[c].append(result.z[take.to(result.z.device)])
                have[c] += len(take)
    x = torch.cat([t for c in range(k) for t in kept_x[c]])
    z = torch.cat([t for c in range(k) for t in kept_z[c]]) if keep_z else None
    y = torch.cat([torch.full((quotas[c],), c, dtype=torch.long) for c in range(k)]).to(x.device)
    merged = SampleInfo.merge(infos)
    extras = {key: v for key, v in merged.extras.items() if key != "shard_time_s_sum"}
    extras["balanced"] = {
        "quotas": quotas,
        "class_probs": [round(q, 8) for q in p],
        "rounds": rounds,
        "batch": batch if fixed else "adaptive",
        "round_sizes": sizes,
        "drawn": drawn,
        "predicted": predicted,
        "kept": have,
        "acceptance": [have[c] / predicted[c] if predicted[c] else None for c in range(k)],
        "acceptance_overall": n / max(drawn, 1),
        "classifier_evals": drawn,
        "seed": seed,
    }
    info = dataclasses.replace(merged, n=n, wall_time_s=time.perf_counter() - t0, extras=extras)
    return BalancedSampleResult(x, z, info, y)
