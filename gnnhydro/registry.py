"""One registry mechanism for everything pluggable (runoff models, IRFs, parameterizers, losses):
a name → class table filled by a decorator and, optionally, by ``importlib.metadata`` entry
points so other packages add plugins without forking."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A case-insensitive name → object table.

    Args:
        kind: what is registered, for messages (``"loss"``, ``"runoff model"``).
        entry_point_group: entry-point group read lazily on a miss (``"gnnhydro.irfs"``).

    ``@registry.register("name")`` registers a class (and sets its ``registry_name``);
    ``registry.get(name)`` returns it or raises a ``ValueError`` listing what is available.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._loaded_entry_points = False

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            key = name.lower()
            if key in self._items and self._items[key] is not obj:
                raise ValueError(
                    f"{self.kind} {key!r} is already registered ({self._items[key]!r})"
                )
            self._items[key] = obj
            try:
                obj.registry_name = key  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return wrap

    def _load_entry_points(self) -> None:
        if self.entry_point_group is None or self._loaded_entry_points:
            return
        self._loaded_entry_points = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name.lower() in self._items:
                continue
            try:
                self._items[ep.name.lower()] = ep.load()
            except Exception:  # a broken plugin must not break the built-ins
                continue

    def get(self, name: str) -> T:
        key = str(name).lower()
        if key not in self._items:
            self._load_entry_points()
        if key not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {self.names()}")
        return self._items[key]

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        key = str(name).lower()
        if key not in self._items:
            self._load_entry_points()
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def items(self) -> Any:
        self._load_entry_points()
        return self._items.items()
