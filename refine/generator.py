"""Latent priors and the generator adapter.

A :class:`LatentGenerator` wraps *any* callable ``z -> x`` (an ``nn.Module``, a
TorchScript or ``torch.export`` module, a plain function) together with the prior
its latents come from. Nothing here moves the user's module or changes its mode.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .device import module_device
from .errors import ConfigError, ShapeError
from .validate import MAX_SAMPLES, as_float, as_int, as_rng, as_shape

__all__ = [
    "Prior",
    "NormalPrior",
    "UniformPrior",
    "LatentGenerator",
    "make_prior",
    "unchanged_buffers",
    "OUTPUT_RANGES",
    "RANGE_BOUNDS",
]

#: Declared output conventions of a generator; refine never guesses them.
OUTPUT_RANGES = ("[-1,1]", "[0,1]", "none")
#: The numbers each named value range spans (``[0,255]`` is for 8-bit images and samples files,
#: not a generator range); ``"none"`` has no bounds.
RANGE_BOUNDS: dict[str, tuple[float, float]] = {"[-1,1]": (-1.0, 1.0), "[0,1]": (0.0, 1.0), "[0,255]": (0.0, 255.0)}


def _event_dims(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(range(1, len(shape) + 1))


@dataclass(frozen=True)
class Prior:
    """Base class: a factorised distribution over latents of shape ``shape``.

    ``sample(n, rng=)`` returns ``(n, *shape)``; ``log_prob(z)`` returns ``(n,)``.
    Noise is drawn on ``rng``'s device and then moved, so the same seed gives
    the same latents whatever device the generator runs on.
    """

    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", as_shape(self.shape, "latent shape"))

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def _noise(self, n: int, rng: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, *, rng: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
        n = as_int(n, "number of samples", minimum=0, maximum=MAX_SAMPLES)
        z = self._noise(n, as_rng(rng))
        return z.to(device=device or z.device, dtype=dtype)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check(self, z: torch.Tensor) -> None:
        if tuple(z.shape[1:]) != self.shape:
            raise ShapeError(
                f"latent batch has shape {tuple(z.shape)}, expected (N, {', '.join(map(str, self.shape))})"
            )

    def to_config(self) -> dict:
        raise NotImplementedError


@dataclass(frozen=True)
class NormalPrior(Prior):
    """Standard normal N(0, I) over ``shape``."""

    def _noise(self, n, rng):
        dev = rng.device if rng is not None else "cpu"
        return torch.randn((n, *self.shape), generator=rng, device=dev)

    def log_prob(self, z):
        self.check(z)
        zf = z.flatten(1)
        return -0.5 * (zf * zf).sum(1) - 0.5 * self.dim * math.log(2 * math.pi)

    def grad_log_prob(self, z):
        return -z

    def to_config(self):
        return {"name": "normal", "shape": list(self.shape)}


@dataclass(frozen=True)
class UniformPrior(Prior):
    """Uniform on the box ``[low, high]^shape`` (default [-1, 1])."""

    low: float = -1.0
    high: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "low", as_float(self.low, "uniform prior low"))
        object.__setattr__(self, "high", as_float(self.high, "uniform prior high"))
        if not self.high > self.low:
            raise ConfigError(f"uniform prior needs high > low, got [{self.low}, {self.high}]")

    def _noise(self, n, rng):
        dev = rng.device if rng is not None else "cpu"
        return torch.rand((n, *self.shape), generator=rng, device=dev) * (self.high - self.low) + self.low

    def log_prob(self, z):
        self.check(z)
        zf = z.flatten(1)
        inside = ((zf >= self.low) & (zf <= self.high)).all(1)
        lp = torch.full((z.shape[0],), -self.dim * math.log(self.high - self.low), dtype=z.dtype, device=z.device)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    def grad_log_prob(self, z):
        return torch.zeros_like(z)

    def to_config(self):
        return {"name": "uniform", "shape": list(self.shape), "low": self.low, "high": self.high}


_PRIORS = {"normal": NormalPrior, "uniform": UniformPrior}


def make_prior(config: dict | str, shape: Sequence[int] | int | None = None) -> Prior:
    """Build a prior from ``{"name": "normal", "shape": [100, 1, 1]}`` or a name plus shape."""
    if isinstance(config, str):
        config = {"name": config, "shape": shape}
    if not isinstance(config, dict):
        raise ConfigError(
            f"a prior is a name ('normal', 'uniform') or a dict such as {{'name': 'normal', 'shape': [100]}}, got {type(config).__name__}"
        )
    config = dict(config)
    name = config.pop("name", None)
    if not isinstance(name, str) or name not in _PRIORS:
        raise ConfigError(f"unknown prior {name!r}; valid priors: {', '.join(_PRIORS)}")
    if config.get("shape") is None:
        raise ConfigError("a prior needs a latent shape")
    shp = as_shape(config.pop("shape"), "prior shape")
    allowed = {"uniform": {"low", "high"}}.get(name, set())
    unknown = sorted(map(str, set(config) - allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for prior {name!r}; valid: {', '.join(sorted(allowed)) or 'none besides shape'}"
        )
    return _PRIORS[name](shp, **config)


_SHAPE_WORDS = ("shape", "size", "channels", "dimension", "elements")


def network_error(e: RuntimeError, role: str, inputs: torch.Tensor, hint: str) -> Exception | None:
    """A one-line refine error for a user's network that cannot take ``inputs``, or None.

    Shape mismatches become a :class:`ShapeError`, dtype and device mismatches a
    :class:`ConfigError`; anything else (out of memory, a bug inside the network) is
    left to propagate unchanged.
    """
    if isinstance(e, torch.OutOfMemoryError):
        return None
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    low = first.lower()
    found = f"inputs of shape {tuple(inputs.shape)} ({str(inputs.dtype).replace('torch.', '')}, {inputs.device})"
    if "device" in low:
        return ConfigError(f"the {role} cannot take {found}: {first}; put the generator and the ratio on one device")
    if "dtype" in low or "scalar type" in low:
        return ConfigError(f"the {role} cannot take {found}: {first}; give the generator and the ratio one dtype")
    if any(w in low for w in _SHAPE_WORDS):
        return ShapeError(f"the {role} cannot take {found}: {first}; {hint}")
    return None


@contextlib.contextmanager
def unchanged_buffers(*nets):
    """Run probes without leaving a trace in the user's modules (BatchNorm running statistics, counters)."""
    saved = []
    for net in nets:
        if isinstance(net, nn.Module):
            saved.append([(b, b.detach().clone()) for b in net.buffers()])
    try:
        yield
    finally:
        with torch.no_grad():
            for group in saved:
                for b, v in group:
                    b.copy_(v)


class LatentGenerator:
    """A generator ``G`` together with its latent prior ``p0``.

    Parameters
    ----------
    net:
        Any callable mapping a latent batch ``(N, *prior.shape)`` to samples ``(N, ...)``.
    prior:
        A :class:`Prior`, or a name (``"normal"``, ``"uniform"``) used with ``latent_shape``.
    latent_shape:
        Latent shape when ``prior`` is a name, e.g. ``(100, 1, 1)`` for DCGAN.
    output_range:
        What the samples mean: ``"[-1,1]"`` (tanh images), ``"[0,1]"``, or ``"none"``
        (unbounded, e.g. 2-D points). Declared, never guessed.
    differentiable:
        Whether gradients flow from ``x`` back to ``z``. ``None`` means "unknown":
        gradient samplers then check it on a small batch before they start.
    """

    def __init__(
        self,
        net: Callable[[torch.Tensor], torch.Tensor],
        prior: Prior | str = "normal",
        *,
        latent_shape: Sequence[int] | int | None = None,
        output_range: str = "none",
        differentiable: bool | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if not callable(net):
            raise ConfigError(f"generator must be callable z -> x, got {type(net).__name__}")
        if isinstance(prior, dict):  # {"name": "normal", "shape": [100]}, as checkpoints store it
            if latent_shape is not None:
                if prior.get("shape") is not None and as_shape(prior["shape"], "prior shape") != as_shape(
                    latent_shape, "latent_shape"
                ):
                    raise ShapeError(
                        f"latent_shape {as_shape(latent_shape, 'latent_shape')} disagrees with the prior's shape {as_shape(prior['shape'], 'prior shape')}"
                    )
                prior = {**prior, "shape": latent_shape}
            prior = make_prior(prior)
        elif isinstance(prior, str):
            if latent_shape is None:
                raise ConfigError("pass latent_shape together with a prior name, e.g. latent_shape=(100, 1, 1)")
            prior = make_prior(prior, as_shape(latent_shape, "latent_shape"))
        elif not isinstance(prior, Prior):
            raise ConfigError(
                f"prior must be a Prior, a name ('normal', 'uniform') or a dict such as {{'name': 'normal', 'shape': [100]}}, got {type(prior).__name__}"
            )
        elif latent_shape is not None:
            shp = as_shape(latent_shape, "latent_shape")
            if shp != prior.shape:
                raise ShapeError(f"latent_shape {shp} disagrees with the prior's shape {prior.shape}")
        if not isinstance(output_range, str) or output_range not in OUTPUT_RANGES:
            raise ConfigError(f"unknown output_range {output_range!r}; valid: {', '.join(OUTPUT_RANGES)}")
        if differentiable is not None and not isinstance(differentiable, bool):
            raise ConfigError(f"differentiable must be True, False or None, got {type(differentiable).__name__}")
        self.net = net
        self.prior = prior
        self.output_range = output_range
        self.differentiable = differentiable
        self._device = torch.device(device) if device is not None else None
        self._sample_shape: tuple[int, ...] | None = None

    @property
    def device(self) -> torch.device:
        return self._device if self._device is not None else module_device(self.net)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.prior.shape

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.prior.check(z)
        try:
            x = self.net(z)
        except RuntimeError as e:
            err = network_error(
                e,
                "generator",
                z,
                f"the prior gives latents of shape {self.prior.shape}; check the latent shape the network was built for",
            )
            if err is None:
                raise
            raise err from e
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"generator returned {type(x).__name__}, expected a tensor")
        if x.shape[0] != z.shape[0]:
            raise ShapeError(f"generator mapped {z.shape[0]} latents to {x.shape[0]} samples")
        return x

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample, e.g. ``(2,)`` or ``(1, 28, 28)``: found once, by running the
        network on two latents (its buffers left as they were), so that a run's memory can be
        estimated before it starts."""
        if self._sample_shape is None:
            z = torch.zeros((2, *self.latent_shape), device=self.device)
            with torch.no_grad(), unchanged_buffers(self.net):
                self._sample_shape = tuple(self(z).shape[1:])
        return self._sample_shape

    def sample_latent(self, n: int, *, rng: torch.Generator | None = None) -> torch.Tensor:
        return self.prior.sample(n, rng=rng, device=self.device)

    @torch.no_grad()
    def sample(self, n: int, *, rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw samples: returns ``(z, x)``."""
        z = self.sample_latent(n, rng=rng)
        return z, self(z)

    def __repr__(self) -> str:
        return f"LatentGenerator({type(self.net).__name__}, prior={self.prior}, output_range={self.output_range!r})"
