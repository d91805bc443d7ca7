"""Probes of user networks, one of each: run a generator and a ratio on two latents and turn
the usual mismatches into one line each.

:func:`check_generator`: a latent shape the network's first layer does not take, a
non-floating output, image samples without a declared output range, values outside the
declared range. :func:`check_pair`: generator samples the discriminator does not take, or
a score that is not one number per sample. :func:`check_gradients`: a network gradients do
not flow through (or flow through as NaN/inf) when a gradient method is asked for.

Every probe runs on a fixed seed of its own (the global RNG is untouched) and restores the
networks' buffers (BatchNorm running statistics) afterwards. This module sits above the
samplers (it names the gradient-free ones in its hints); nothing below it imports it.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .errors import ConfigError, RefineError, ShapeError
from .generator import LatentGenerator, unchanged_buffers
from .ratio.base import check_log_ratio
from .samplers import SAMPLERS
from .target import check_gradients as _check_gradients

__all__ = [
    "check_generator",
    "check_pair",
    "check_gradients",
    "gradients_through_generator",
    "gradient_methods",
    "first_layer",
]


def first_layer(net) -> str | None:
    """``"Linear(in_features=2)"`` for the first Linear/Conv layer of a module, where it can be found."""
    if not isinstance(net, nn.Module):
        return None
    for m in net.modules():
        kind = getattr(m, "original_name", None) or type(m).__name__
        if kind == "Linear" and hasattr(m, "in_features"):
            return f"Linear(in_features={m.in_features})"
        if kind.startswith(("Conv", "ConvTranspose")) and hasattr(m, "in_channels"):
            return f"{kind}(in_channels={m.in_channels})"
        if kind == "Embedding":
            return "Embedding"
    return None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _warn_training(net, role: str) -> None:
    if isinstance(net, nn.Module) and not isinstance(net, torch.jit.ScriptModule) and net.training:
        if any(
            isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.modules.dropout._DropoutNd))
            for m in net.modules()
        ):
            warnings.warn(
                f"the {role} is in training mode and has BatchNorm/Dropout layers, so each sample depends on its batch; call .eval() on it before wrapping",
                stacklevel=3,
            )


def check_generator(
    generator: LatentGenerator,
    *,
    output_range: str | None = None,
    source: str | None = None,
    latent_flag: str = "latent_shape",
) -> torch.Tensor:
    """Run the generator on two latents from its prior; return the samples (no gradients).

    Raises a one-line ShapeError when the latent shape does not fit the network, and a
    ConfigError for image-shaped samples (``(N, C, H, W)``) when ``output_range`` is not
    declared (``None``).
    """
    who = source or f"the generator ({type(generator.net).__name__})"
    _warn_training(generator.net, "generator")
    z = generator.prior.sample(2, rng=torch.Generator().manual_seed(0), device=generator.device)
    with torch.no_grad(), unchanged_buffers(generator.net):
        try:
            x = generator(z)
        except (RuntimeError, AssertionError, IndexError, ValueError, TypeError, ShapeError) as e:
            cause = e.__cause__ if isinstance(e, RefineError) else e
            if isinstance(e, RefineError) and (cause is None or not isinstance(e, ShapeError)):
                raise  # refine's own message (sample count, return type, dtype/device) already says it all
            layer = first_layer(generator.net)
            hint = f"its first layer is {layer}" if layer else "check the latent size the network was built for"
            raise ShapeError(
                f"{who} does not take latents of shape (N, {', '.join(map(str, generator.latent_shape))}): {_first_line(cause)}; {hint}; pass the right {latent_flag}"
            ) from None
    if not torch.is_floating_point(x):
        raise ShapeError(f"{who} returned a {x.dtype} tensor; expected floating-point samples")
    if output_range is None and x.dim() >= 4:
        raise ConfigError(
            f"{who} returns images of shape (N, {', '.join(map(str, x.shape[1:]))}) but no output range was declared; "
            "declare it: output_range='[-1,1]' (tanh output) or '[0,1]' (sigmoid output) (CLI: --output-range)"
        )
    declared = output_range or generator.output_range
    if declared in ("[-1,1]", "[0,1]") and torch.isfinite(x).all():
        lo, hi = (-1.0, 1.0) if declared == "[-1,1]" else (0.0, 1.0)
        xmin, xmax = float(x.min()), float(x.max())
        if xmin < lo - 0.05 or xmax > hi + 0.05:
            warnings.warn(
                f"{who} produced values in [{xmin:.3g}, {xmax:.3g}], outside its declared output range {declared}; check the declaration",
                stacklevel=2,
            )
    return x


def check_pair(
    generator: LatentGenerator,
    ratio,
    *,
    x: torch.Tensor | None = None,
    source: str | None = None,
    gen_source: str | None = None,
) -> None:
    """Check that the ratio (discriminator) takes the generator's samples and returns one score each."""
    if ratio is None:
        return
    if x is None:
        x = check_generator(generator, output_range=generator.output_range, source=gen_source)
    net = getattr(ratio, "net", None)
    who = source or (
        f"the discriminator ({type(net).__name__})" if net is not None else f"the ratio ({type(ratio).__name__})"
    )
    _warn_training(net, "discriminator")
    with torch.no_grad(), unchanged_buffers(net):
        try:
            out = ratio.log_ratio(x)
        except RefineError:
            raise
        except (RuntimeError, AssertionError, IndexError, ValueError, TypeError) as e:
            layer = first_layer(net)
            hint = f"; its first layer is {layer}" if layer else ""
            raise ShapeError(
                f"{who} does not take the generator's samples of shape (N, {', '.join(map(str, x.shape[1:]))}): {_first_line(e)}{hint}; "
                "is it the discriminator trained with this generator?"
            ) from None
    try:
        check_log_ratio(out, x.shape[0], who)
    except ShapeError as e:
        raise ShapeError(f"{e}: a discriminator must return one score per sample") from None


def gradient_methods() -> list[str]:
    return [name for name, cls in SAMPLERS.items() if getattr(cls, "needs_gradients", False)]


def _gradient_free() -> str:
    return ", ".join(n for n, c in SAMPLERS.items() if not getattr(c, "needs_gradients", False) and n != "none")


def gradients_through_generator(sampler) -> bool:
    """Whether a gradient sampler differentiates through the generator (latent space) or
    only through the ratio (data space, as the sampler declares)."""
    return not sampler.moves_in_data_space


def check_gradients(
    generator: LatentGenerator,
    ratio,
    *,
    method: str = "this method",
    source: str | None = None,
    ratio_source: str | None = None,
    through_generator: bool = True,
) -> None:
    """:func:`refine.target.check_gradients`, its hint naming the registered gradient-free samplers."""
    _check_gradients(
        generator,
        ratio,
        method=method,
        source=source,
        ratio_source=ratio_source,
        through_generator=through_generator,
        alternatives=_gradient_free(),
    )
