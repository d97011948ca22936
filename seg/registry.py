"""One tiny registry for named things (models, encoders, losses...)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from seg.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; an unknown name lists the valid ones.

    Args:
        kind: what is registered, used in error messages (e.g. "model").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The factory registered under ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered (the message suggests close names).
        """
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        """``unknown model 'ag_unte' (did you mean 'ag_unet'?); valid names: ...``."""
        valid = ", ".join(sorted(self._items)) or "(none)"
        close = difflib.get_close_matches(str(name), list(self._items), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; valid names: {valid}"

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: Any) -> bool:
        return name in self._items
