"""A small name -> factory registry for models (BasicSR/timm style, explicit registration)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered factory with the keyword defaults of its preset."""

    name: str
    factory: Callable[..., T]
    defaults: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


class Registry(Generic[T]):
    """Maps names to factories. Duplicate names are rejected; unknown names list the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, factory: Callable[..., T], summary: str = "", **defaults: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, factory, dict(defaults), summary)

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise KeyError(f"unknown {self.kind} {name!r}; available: {known}") from None

    def names(self, pattern: str | None = None) -> list[str]:
        names = sorted(self._entries)
        return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def build(self, name: str, **options: Any) -> T:
        """Call the factory with the preset's defaults updated by ``options`` (None values ignored)."""
        entry = self.get(name)
        kwargs = {**entry.defaults, **{k: v for k, v in options.items() if v is not None}}
        return entry.factory(**kwargs)
