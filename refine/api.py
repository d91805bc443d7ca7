"""The short path from a trained network to refined samples.

    import torch, refine
    target = refine.wrap(G, latent_shape=(100, 1, 1), prior="normal", output_range="[-1,1]",
                         discriminator=D, output="logit")
    result = refine.sample(target, "drs", n=1000, rng=torch.Generator().manual_seed(0), gamma=80)
    result.x, result.info

``G`` is any ``nn.Module`` or callable ``z -> x`` (a TorchScript or ``torch.export``
module, a plain function); ``D`` likewise ``x -> score``. Nothing is moved, put in
eval mode or copied: pass modules on the device and in the mode you want them used.
Files from elsewhere load through :mod:`refine.io.foreign`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .balanced import DEFAULT_MAX_ROUNDS, sample_balanced
from .checks import check_generator, check_gradients, check_pair, gradients_through_generator
from .conditional import is_conditional, sample_conditional, wrap_conditional
from .errors import ConfigError
from .generator import OUTPUT_RANGES, LatentGenerator, Prior
from .ratio.discriminator import DISCRIMINATOR_OUTPUTS, DiscriminatorRatio
from .samplers import get_sampler
from .samplers.base import SampleResult
from .target import LatentTarget
from .validate import as_shape

__all__ = ["wrap", "sample"]


def wrap(
    generator: Callable[[torch.Tensor], torch.Tensor] | LatentGenerator,
    *,
    latent_shape: Sequence[int] | int | None = None,
    prior: Prior | str | dict = "normal",
    output_range: str | None = None,
    discriminator: Callable[[torch.Tensor], torch.Tensor] | None = None,
    output: str | None = None,
    temperature: float = 1.0,
    ratio=None,
    differentiable: bool | None = None,
    check: bool = True,
    num_classes: int | None = None,
    label: str = "index",
):
    """Wrap any generator (``nn.Module`` or callable ``z -> x``) for refinement.

    Parameters
    ----------
    generator:
        Maps a latent batch ``(N, *latent_shape)`` to samples ``(N, ...)``; or a
        :class:`LatentGenerator` (then ``latent_shape``/``prior``/``output_range`` come with it).
    latent_shape, prior:
        The latents it was trained on: ``latent_shape=(100, 1, 1)`` with ``prior="normal"``
        (or ``"uniform"`` on [-1, 1]), a :class:`Prior` object, or a dict as checkpoints
        store it (``{"name": "normal", "shape": [100, 1, 1]}``).
    output_range:
        ``"[-1,1]"`` (tanh), ``"[0,1]"`` (sigmoid) or ``"none"`` (unbounded). Declared,
        never guessed: required when the samples are images ``(N, C, H, W)``; other
        samples default to ``"none"``.
    discriminator, output, temperature:
        A discriminator ``x -> score`` and what it returns: ``"logit"`` (pre-sigmoid),
        ``"prob"`` (``D(x)`` in (0, 1)) or ``"critic"`` (a WGAN critic, read as
        ``log r = critic / temperature``). ``output`` is required with a discriminator.
    ratio:
        Instead of a discriminator, any density ratio (``log_ratio(x) -> (N,)``), e.g. a
        :class:`refine.FunctionRatio` with a closed form or a ratio from ``refine.load_ratio``.
    differentiable:
        ``False`` marks a generator that gradients do not flow through; ``None``
        (default) lets gradient methods check it on a small batch.
    check:
        Run the generator (and the discriminator) on two latents now, so a wrong
        latent size, a discriminator that does not take the samples or an undeclared
        image range fails here in one line rather than inside a sampler. The probe
        leaves the modules' buffers (BatchNorm statistics) as they were.
    num_classes, label:
        A class-conditional pair ``G(z, y)``, ``D(x, y)`` with ``num_classes`` classes, the label
        passed as ``"index"`` (integer tensor ``(N,)``) or ``"onehot"`` (float ``(N, K)``); then a
        :class:`refine.conditional.ConditionalTarget` comes back, sampled per class by
        :func:`sample` with ``classes=`` (see :mod:`refine.conditional`).

    Returns
    -------
    A :class:`LatentTarget` (every sampler accepts it) when a discriminator or ratio is
    given; otherwise the :class:`LatentGenerator` (raw sampling, method ``"none"``).
    """
    if num_classes is not None:
        return wrap_conditional(
            generator,
            num_classes=num_classes,
            label=label,
            latent_shape=latent_shape,
            prior=prior,
            output_range=output_range,
            discriminator=discriminator,
            output=output,
            temperature=temperature,
            ratio=ratio,
            differentiable=differentiable,
            check=check,
        )
    if isinstance(generator, LatentTarget):
        raise ConfigError("wrap() got a LatentTarget, which is already wrapped; pass it to refine.sample directly")
    if not isinstance(check, bool):
        raise ConfigError(f"check must be True or False, got {type(check).__name__}")
    if output_range is not None and (not isinstance(output_range, str) or output_range not in OUTPUT_RANGES):
        raise ConfigError(f"unknown output_range {output_range!r}; valid: {', '.join(OUTPUT_RANGES)}")
    if isinstance(generator, LatentGenerator):
        if latent_shape is not None and as_shape(latent_shape, "latent_shape") != generator.latent_shape:
            raise ConfigError(
                f"latent_shape {latent_shape} disagrees with the LatentGenerator's {generator.latent_shape}"
            )
        gen = generator
        declared = output_range or gen.output_range
        if output_range is not None and output_range != gen.output_range:
            gen = LatentGenerator(gen.net, gen.prior, output_range=output_range, differentiable=gen.differentiable)
    else:
        if isinstance(prior, Prior) and latent_shape is None:
            latent_shape = prior.shape
        if isinstance(prior, dict) and latent_shape is None and prior.get("shape") is not None:
            latent_shape = prior["shape"]
        if latent_shape is None:
            raise ConfigError(
                "wrap() needs the generator's latent_shape, e.g. latent_shape=128 or latent_shape=(100, 1, 1) (or a Prior object)"
            )
        gen = LatentGenerator(
            generator,
            prior,
            latent_shape=latent_shape,
            output_range=output_range or "none",
            differentiable=differentiable,
        )
        declared = output_range
    if discriminator is not None and ratio is not None:
        raise ConfigError("pass either discriminator= or ratio=, not both")
    if discriminator is not None:
        if output is None:
            raise ConfigError(
                f"say what the discriminator returns: output= one of {', '.join(DISCRIMINATOR_OUTPUTS)} "
                "('logit' before the sigmoid, 'prob' after it, 'critic' for a WGAN critic)"
            )
        ratio = DiscriminatorRatio(discriminator, output, temperature=temperature)
    elif output is not None:
        raise ConfigError("output= describes a discriminator; pass discriminator= too (or drop output=)")
    if ratio is not None and not hasattr(ratio, "log_ratio"):
        raise ConfigError(
            f"ratio= needs a log_ratio(x) method, got {type(ratio).__name__}; for a network use discriminator= with output="
        )
    if check:
        x = check_generator(gen, output_range=declared)
        if ratio is not None:
            check_pair(gen, ratio, x=x)
    return LatentTarget(gen, ratio) if ratio is not None else gen


def sample(
    target,
    method: str = "none",
    n: int = 1000,
    *,
    rng: torch.Generator | None = None,
    progress: bool = False,
    real: torch.Tensor | None = None,
    classes=None,
    real_y: torch.Tensor | None = None,
    balance: Callable[[torch.Tensor], torch.Tensor] | None = None,
    class_probs=None,
    balance_batch: int | None = None,
    balance_rounds: int = DEFAULT_MAX_ROUNDS,
    **options,
) -> SampleResult:
    """Run sampler ``method`` (see ``refine.list_samplers()``) with ``options`` on ``target``.

    ``target`` is what :func:`wrap` returned. A gradient method first checks, on two
    latents, that gradients reach ``z`` through the generator and the ratio, and
    says which one stops them.

    A conditional target (``wrap(..., num_classes=K)``) is sampled class by class:
    ``classes`` is ``"balanced"`` (the default: ``n / K`` per class, the remainder to the
    first classes), one class, a list of classes or ``{class: count}``; ``real_y`` labels
    ``real``. The result carries ``y``; see :func:`refine.conditional.sample_conditional`.

    ``balance=classifier`` (a module mapping samples to logits ``(N, K)``, e.g. from
    :func:`refine.eval.classifier.load_classifier`) keeps the refined class histogram of an
    unconditional generator at ``class_probs`` (default uniform; e.g. the data's label
    frequencies): the sampler runs in rounds of ``balance_batch`` samples (default: ``n``, then
    sized from the class rates seen so far), at most ``balance_rounds`` of them, and samples are kept per predicted class up to each
    class's quota. The result carries ``y`` (the predicted classes), grouped by class; see
    :func:`refine.balanced.sample_balanced`.
    """

    if not isinstance(method, str):
        raise ConfigError(
            f"method must be a name such as 'drs' (see refine.list_samplers()), got {type(method).__name__} {method!r}"
        )
    sampler = get_sampler(method, **options)
    if balance is None and (class_probs is not None or balance_batch is not None):
        raise ConfigError("class_probs= and balance_batch= apply to balanced sampling; pass balance=classifier too")
    if balance is not None and (is_conditional(target) or classes is not None or real_y is not None):
        raise ConfigError(
            "balance= stratifies an unconditional generator by a classifier; a conditional one takes classes= instead"
        )
    if is_conditional(target):
        return sample_conditional(
            sampler,
            target,
            n,
            classes="balanced" if classes is None else classes,
            rng=rng,
            progress=progress,
            real=real,
            real_y=real_y,
        )
    if classes is not None or real_y is not None:
        raise ConfigError(
            "classes= and real_y= apply to conditional generators; wrap one with refine.wrap(..., num_classes=K)"
        )
    if isinstance(target, LatentGenerator):
        if method != "none":
            raise ConfigError(
                f"method {method!r} needs a density ratio: wrap the generator with discriminator= (and output=) or ratio="
            )
        target = LatentTarget(target)
    if not isinstance(target, LatentTarget):
        raise ConfigError(f"refine.sample needs what refine.wrap returns (a LatentTarget), got {type(target).__name__}")
    if sampler.needs_gradients:
        check_gradients(
            target.generator, target.ratio, method=method, through_generator=gradients_through_generator(sampler)
        )
    if balance is not None:
        return sample_balanced(
            sampler,
            target,
            n,
            classifier=balance,
            class_probs=class_probs,
            rng=rng,
            batch=balance_batch,
            max_rounds=balance_rounds,
            progress=progress,
            real=real,
        )
    return sampler.sample(target, n, rng=rng, progress=progress, real=real)
