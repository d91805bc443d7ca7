"""Registry of training methods: ``refine train --method NAME``."""

from __future__ import annotations

from ..registry import Registry

METHODS: Registry[type] = Registry("training method", on_register=lambda name, cls: setattr(cls, "method_name", name))


def register_method(name: str):
    return METHODS.register(name)


def list_methods(*, conditional: bool = False) -> list[str]:
    """Methods that train on unlabelled data (2-D mixtures, images); with ``conditional=True``, also those
    that train class-conditional networks on labelled images (they declare ``conditional = True``)."""
    return [name for name, cls in METHODS.items() if conditional or not getattr(cls, "conditional", False)]


def get_method(name: str) -> type:
    return METHODS.get_or_fail(name)
