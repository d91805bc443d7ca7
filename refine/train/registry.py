"""Registry of training methods: ``refine train --method NAME``."""

from __future__ import annotations

from ..errors import ConfigError

METHODS: dict[str, type] = {}


def register_method(name: str):
    def deco(cls):
        if name in METHODS:
            raise ValueError(f"training method {name!r} registered twice")
        cls.method_name = name
        METHODS[name] = cls
        return cls

    return deco


def list_methods(*, conditional: bool = False) -> list[str]:
    """Methods that train on unlabelled data (2-D mixtures, images); with ``conditional=True``, also those
    that train class-conditional networks on labelled images (they declare ``conditional = True``)."""
    return [name for name, cls in METHODS.items() if conditional or not getattr(cls, "conditional", False)]


def get_method(name: str) -> type:
    if name not in METHODS:
        raise ConfigError(f"unknown training method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]
