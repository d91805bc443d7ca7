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
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
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
    "SampleInfo",
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


#: Counters of :class:`SampleInfo` (summed across shards), in the order ``to_dict`` shows them.
_COUNTERS = ("n", "proposals", "accepted", "g_evals", "d_evals", "g_backward", "d_backward")
#: Keys ``to_dict`` derives from the counters (never stored).
_DERIVED = {
    "acceptance_rate": ("accepted", "proposals"),
    "proposals_per_sample": ("proposals",),
    "g_evals_per_sample": ("g_evals",),
    "d_evals_per_sample": ("d_evals",),
    "g_backward_per_sample": ("g_backward",),
    "d_backward_per_sample": ("d_backward",),
}


@dataclass(frozen=True, eq=False)  # compared as a mapping, like the dicts it replaces
class SampleInfo(Mapping):
    """What a run cost and what the method reports: one typed record for every sampler.

    Counters (per run, not per sample): ``n`` samples returned; ``proposals`` drawn from the
    prior (or moves proposed) and ``accepted`` of them, where the method has such; forward
    passes of the generator (``g_evals``) and of the ratio network (``d_evals``); backward
    passes (``g_backward``, ``d_backward``) for gradient methods. Rates are properties derived
    from the counters. ``extras`` holds what only one method reports (its bound, its ESS, ...).

    The record reads as a mapping with the keys run records have always used
    (``info["acceptance_rate"]``, ``info.get("g_evals_per_sample")``, ``{**info}``);
    :meth:`to_dict` is that mapping as a plain dict. A counter left at None is not a key.
    Shards and chunks combine with :meth:`merge`, the one rule for several records.
    """

    method: str
    n: int
    g_evals: int = 0
    d_evals: int = 0
    g_backward: int | None = None
    d_backward: int | None = None
    proposals: int | None = None
    accepted: int | None = None
    wall_time_s: float = 0.0
    extras: Mapping[str, Any] = field(default_factory=dict)

    #: Extras that are counts: summed across shards. Any other extra is kept where every
    #: shard reports the same value, averaged by samples where listed in :attr:`AVERAGED`,
    #: and otherwise listed per shard under ``per_shard``.
    SUMMED: typing.ClassVar[frozenset[str]] = frozenset(
        {"burn_in", "chains", "chains_never_moved", "m_updates", "accepted_exact"}
    )
    AVERAGED: typing.ClassVar[frozenset[str]] = frozenset({"ess"})

    def __post_init__(self) -> None:
        derived = {k for k, needs in _DERIVED.items() if all(getattr(self, c) is not None for c in needs)}
        clash = sorted(set(self.extras) & ({"method", "wall_time_s", *_COUNTERS} | derived))
        if clash:
            raise ValueError(f"extras {clash} name counters or derived rates of the record; set the counters instead")
        object.__setattr__(self, "extras", types.MappingProxyType(dict(self.extras)))

    # ------------------------------------------------------------------ derived rates
    @property
    def acceptance_rate(self) -> float | None:
        if self.accepted is None or self.proposals is None:
            return None
        return self.accepted / max(self.proposals, 1)

    @property
    def proposals_per_sample(self) -> float | None:
        return None if self.proposals is None else self.proposals / max(self.n, 1)

    @property
    def g_evals_per_sample(self) -> float:
        return self.g_evals / max(self.n, 1)

    @property
    def d_evals_per_sample(self) -> float:
        return self.d_evals / max(self.n, 1)

    @property
    def g_backward_per_sample(self) -> float | None:
        return None if self.g_backward is None else self.g_backward / max(self.n, 1)

    @property
    def d_backward_per_sample(self) -> float | None:
        return None if self.d_backward is None else self.d_backward / max(self.n, 1)

    # ------------------------------------------------------------------ the mapping view
    def to_dict(self) -> dict[str, Any]:
        """The record as the plain dict ``run.json`` holds (counters set to None are left out)."""
        out: dict[str, Any] = {"method": self.method, "n": self.n}
        for k in ("proposals", "accepted", "acceptance_rate", "proposals_per_sample"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        out.update(self.extras)
        for k in (
            "g_evals",
            "d_evals",
            "g_backward",
            "d_backward",
            "g_evals_per_sample",
            "d_evals_per_sample",
            "g_backward_per_sample",
            "d_backward_per_sample",
        ):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        out["wall_time_s"] = self.wall_time_s
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    def with_extras(self, **extras: Any) -> SampleInfo:
        """A copy with ``extras`` added (or replaced)."""
        return dataclasses.replace(self, extras={**self.extras, **extras})

    @classmethod
    def from_dict(cls, info: Mapping[str, Any]) -> SampleInfo:
        """The record of a mapping such as :meth:`to_dict` gives (e.g. read back from a shard's JSON).

        Counters are taken by name; a derived rate is dropped where the counters re-derive it,
        and kept as an extra otherwise; every other key is an extra.
        """
        if isinstance(info, SampleInfo):
            return info
        d = dict(info)
        kw: dict[str, Any] = {"method": str(d.pop("method", "")), "n": int(d.pop("n", 0))}
        for k in _COUNTERS[1:]:
            if isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool):
                kw[k] = int(d.pop(k))
        if isinstance(d.get("wall_time_s"), (int, float)):
            kw["wall_time_s"] = float(d.pop("wall_time_s"))
        for k, needs in _DERIVED.items():
            if k in d and all(kw.get(c) is not None for c in needs):
                del d[k]
        return cls(**kw, extras=d)

    @classmethod
    def merge(cls, infos: Iterable[Mapping[str, Any]]) -> SampleInfo:
        """One record for several shards or chunks of one run.

        Counters and wall times add up (``wall_time_s`` is the sum of the parts' times, also
        kept as the extra ``shard_time_s_sum``; a caller that timed the whole run replaces
        it); rates follow from the sums. Extras: counts in :attr:`SUMMED` add up, values in
        :attr:`AVERAGED` are averaged weighted by samples, a value every part agrees on is
        kept, and the rest are listed part by part under ``per_shard``.
        """
        recs = [cls.from_dict(i) for i in infos]
        if not recs:
            raise ValueError("no records to merge")
        n = sum(r.n for r in recs)
        kw: dict[str, Any] = {"method": recs[0].method, "n": n}
        for k in _COUNTERS[1:]:
            vals = [getattr(r, k) for r in recs]
            kw[k] = None if any(v is None for v in vals) else sum(vals)
        kw["wall_time_s"] = sum(r.wall_time_s for r in recs)
        keys: list[str] = []
        for r in recs:
            keys += [k for k in r.extras if k not in keys]
        extras: dict[str, Any] = {}
        per_shard: dict[str, list] = {}
        for k in keys:
            vals = [r.extras.get(k) for r in recs]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
            if k in cls.SUMMED and numeric:
                extras[k] = sum(vals)
            elif all(v == vals[0] for v in vals):
                extras[k] = vals[0]
            elif k in cls.AVERAGED and numeric:
                extras[k] = sum(v * r.n for v, r in zip(vals, recs)) / max(n, 1)
            else:
                per_shard[k] = vals
        extras["shard_time_s_sum"] = kw["wall_time_s"]
        if per_shard:
            extras["per_shard"] = per_shard
        return cls(**kw, extras=extras)


@dataclass
class SampleResult:
    """Refined samples ``x`` (N, ...), their latents ``z`` where the method keeps them, and an info record.

    ``info`` is a :class:`SampleInfo` for every built-in method (a plain mapping from a method
    that builds its own): it reads as a JSON-serialisable mapping whose keys every sampler
    fills are ``method``, ``n``, ``g_evals``, ``d_evals`` (forward passes of G and of the ratio
    network) with their ``*_per_sample`` rates and ``wall_time_s``, and where they apply
    ``acceptance_rate``, ``proposals_per_sample`` and ``ess``. ``dict(result.info)`` is the
    record ``run.json`` holds.
    """

    x: torch.Tensor
    z: torch.Tensor | None
    info: Mapping[str, Any]


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
    #: Old option names still accepted by :func:`get_sampler` (with a DeprecationWarning): ``{old: new}``.
    renamed_options: typing.ClassVar[dict[str, str]] = {}
    #: Old option values still accepted (with a DeprecationWarning): ``{option: {old: new}}``.
    renamed_values: typing.ClassVar[dict[str, dict[Any, Any]]] = {}

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
    if args and typing.get_origin(tp) in (typing.Union, getattr(types, "UnionType", None)):
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
    options = upgrade_options(cls, options)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "(none)"
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for method {name}; valid options: {valid}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], k, name) for k, v in options.items()}
    return cls(**kwargs)


def upgrade_options(cls: type[Sampler], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the class's old option names and values replaced by the current ones,
    each with a DeprecationWarning; both the old and the new name at once is a ConfigError."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        new = cls.renamed_options.get(key)
        if new is not None:
            if new in options:
                raise ConfigError(f"options {key} and {new} for method {cls.name} are the same option; pass {new} only")
            warnings.warn(f"option {key} of method {cls.name} is now {new}", DeprecationWarning, stacklevel=3)
            key = new
        values = cls.renamed_values.get(key, {})
        if isinstance(value, str) and value in values:
            warnings.warn(
                f"{key}={value} of method {cls.name} is now {key}={values[value]} (same meaning)",
                DeprecationWarning,
                stacklevel=3,
            )
            value = values[value]
        out[key] = value
    return out


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
