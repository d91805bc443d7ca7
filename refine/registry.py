"""One registry type for every "name -> thing" table: samplers, architectures, training methods,
ratio-file loaders.

A :class:`Registry` is a mapping with a ``register(name)`` decorator; a name registered twice is a
programming error (``ValueError``), an unknown name a user error (:class:`ConfigError` listing the
valid names). Item assignment and deletion exist for tests that swap an entry for a while
(``monkeypatch.setitem``); code registers with the decorator. Registration happens when the defining module is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Generic, TypeVar

from .errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(MutableMapping[str, T], Generic[T]):
    """``name -> entry``, filled by ``@registry.register(name)``.

    ``kind`` names the entries in messages ("sampler", "architecture", ...). ``on_register(name, entry)``
    runs once per registration (e.g. to set ``cls.name``).
    """

    def __init__(self, kind: str, *, on_register: Callable[[str, T], None] | None = None, sort: bool = False):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._on_register = on_register
        self._sort = sort

    def register(self, name: str) -> Callable[[T], T]:
        def deco(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            if self._on_register is not None:
                self._on_register(name, entry)
            self._entries[name] = entry
            return entry

        return deco

    def get_or_fail(self, name: str) -> T:
        """The entry called ``name``, or a ConfigError that lists the valid names."""
        if name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names()) or '(none)'}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries) if self._sort else list(self._entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __setitem__(self, name: str, entry: T) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
