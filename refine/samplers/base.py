"""Sampler base class, result record and the registry of methods.

A sampler is a frozen dataclass of hyperparameters; it keeps no module, cache or
state between calls. ``sampler.sample(target, n, rng=...)`` returns a
:class:`SampleResult`. Options are declared as dataclass fields with a ``help``
entry in their metadata; :func:`get_sampler` validates names, options and types,
and turns CLI strings into the declared types.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import budget
from ..errors import ConfigError
from ..registry import Registry
from ..target import LatentTarget, check_finite
from ..validate import MAX_SAMPLES, as_int, as_rng

__all__ = [
    "Sampler",
    "SampleResult",
    "register",
    "get_sampler",
    "list_samplers",
    "sampler_options",
    "SAMPLERS",
    "option",
]

SAMPLERS: Registry[type[Sampler]] = Registry("method", on_register=lambda name, cls: _set_name(name, cls))


def option(default, help: str, **kw):
    """A sampler option: a dataclass field with a help string (shown by ``refine list``)."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class SampleResult:
    """Refined samples ``x`` (N, ...), their latents ``z`` where the method keeps them, and an info record.

    ``info`` is a JSON-serialisable dict; the keys every sampler fills are ``method``,
    ``n``, ``g_evals``, ``d_evals`` (forward passes of G and of the ratio network,
    counted per sample), and where they apply ``acceptance_rate``,
    ``proposals_per_sample`` and ``ess``.
    """

    x: torch.Tensor
    z: torch.Tensor | None
    info: dict[str, Any]


#: Depth of nested ``sample`` calls (a subclass calling ``super().sample``): checks run at the outermost only.
_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("refine_sample_depth", default=0)


def _checked(impl: Callable) -> Callable:
    """Wrap a sampler's ``sample``: validate ``n`` and ``rng`` first, check the result last.

    Every registered method gets the same guarantees without repeating them: ``n`` is a
    positive integer (numpy and torch integers count), ``rng`` a ``torch.Generator`` or
    None, and no NaN or inf leaves the sampler (a :class:`NonFiniteError` naming the
    method and how many samples).
    """

    @functools.wraps(impl)
    def sample(self, target, n, *args, rng=None, **kwargs):
        if _DEPTH.get():
            return impl(self, target, n, *args, rng=rng, **kwargs)
        n = as_int(n, "number of samples", minimum=1, maximum=MAX_SAMPLES)
        rng = as_rng(rng)
        if isinstance(target, LatentTarget):
            budget.check(self, target, n)  # work and memory, before any of it is spent
        token = _DEPTH.set(1)
        try:
            result = impl(self, target, n, *args, rng=rng, **kwargs)
        finally:
            _DEPTH.reset(token)
        check_result(result, self.name or type(self).__name__)
        return result

    sample._refine_checked = True  # type: ignore[attr-defined]
    return sample


def check_result(result: SampleResult, method: str) -> None:
    """A :class:`NonFiniteError` if the samples (or the latents) hold NaN or inf."""
    check_finite(
        result.x,
        f"the samples of method {method}",
        "the generator produced them (check its weights and inputs), or the method diverged (lower its step size)",
    )
    if result.z is not None:
        check_finite(result.z, f"the latents of method {method}", "lower the step size")


@dataclass(frozen=True)
class Sampler:
    """Base class. Subclasses set ``name``, declare options as fields, and implement ``sample``.

    The cost declarations (:meth:`planned_evals`, :meth:`rows_in_memory`) let a caller
    estimate the work and memory of a run before it starts; subclasses whose cost is not
    one generator pass per sample override them.
    """

    name: typing.ClassVar[str] = ""
    needs_gradients: typing.ClassVar[bool] = False
    summary: typing.ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        impl = cls.__dict__.get("sample")
        if impl is not None and not getattr(impl, "_refine_checked", False):
            cls.sample = _checked(impl)

    def sample(
        self,
        target,
        n: int,
        *,
        rng: torch.Generator | None = None,
        progress: bool = False,
        real: torch.Tensor | None = None,
    ) -> SampleResult:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def planned_evals(self, n: int) -> float:
        """Generator forward passes a run of ``n`` samples needs at the least (backward passes
        count as two); for rejection methods the acceptance rate multiplies this."""
        return float(n)

    def rows_in_memory(self) -> int:
        """Latents and samples the method holds at once while it works (its memory bound)."""
        return int(getattr(self, "batch_size", 4096))

    # What a method needs from its caller, declared here so that the CLI, sharded runs and the
    # network checks follow the declaration instead of guessing from option names.
    def real_rows(self, n: int) -> int:
        """Held-out real samples (``real=``) a run of ``n`` samples needs; 0 when none."""
        return 0

    @property
    def real_per_sample(self) -> bool:
        """Whether ``real`` holds one row per output sample (split with the samples across
        shards and chunks) rather than data the method learns from (given whole to each)."""
        return False

    @property
    def moves_in_data_space(self) -> bool:
        """Whether the method moves samples ``x`` (needing ``d log r / dx`` only) rather than
        latents ``z`` (needing gradients through the generator as well)."""
        return False

    def _check_n(self, n: int) -> int:
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise ConfigError(f"number of samples must be a positive integer, got {n!r}")
        return n


def _set_name(name: str, cls) -> None:
    cls.name = name


def register(name: str) -> Callable[[type[Sampler]], type[Sampler]]:
    """Class decorator: ``@register("mh")`` makes the sampler available as ``refine sample --method mh``."""
    return SAMPLERS.register(name)


def list_samplers() -> list[str]:
    return list(SAMPLERS)


def sampler_options(name: str) -> list[dict[str, Any]]:
    """``[{name, type, default, help}]`` for a sampler's options."""
    cls = _lookup(name)
    hints = typing.get_type_hints(cls)
    return [
        {"name": f.name, "type": _type_name(hints[f.name]), "default": f.default, "help": f.metadata.get("help", "")}
        for f in dataclasses.fields(cls)
    ]


def _lookup(name: str) -> type[Sampler]:
    return SAMPLERS.get_or_fail(name)


def _type_name(tp) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Literal:
        return "|".join(map(str, typing.get_args(tp)))
    if args and typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return _type_name(args[0]) + "?"
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, key: str, method: str):
    """Turn a CLI string (or a Python value) into the option's declared type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"option {key}={value!r} for {method}: expected one of {', '.join(map(str, args))}")
        return value
    if args and type(None) in args:  # Optional[T]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, key, method)
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {key}={value!r} for {method}: expected {_type_name(tp)}") from None
    return value


def get_sampler(name: str, **options) -> Sampler:
    """Build a sampler by name; unknown methods and options are errors that list the valid ones."""
    cls = _lookup(name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "(none)"
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for method {name}; valid options: {valid}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], k, name) for k, v in options.items()}
    return cls(**kwargs)


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    """``["gamma=80", "k=640"]`` -> ``{"gamma": "80", "k": "640"}``."""
    out: dict[str, str] = {}
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"option {p!r} is not key=value (e.g. -o gamma=80)")
        k, v = p.split("=", 1)
        k = k.strip().replace("-", "_")
        if not k:
            raise ConfigError(f"option {p!r} has an empty key")
        out[k] = v.strip()
    return out
