"""A registry is a dict plus a decorator, and it fails loudly (cf. torchvision models/_api.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from edgekit.errors import EdgekitError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Builders registered by name.

    Args:
        kind: what the entries are ("model", "dataset"), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: register `fn` under `name`. Raises ValueError on a duplicate name."""

        def wrap(fn: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            return fn

        return wrap

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> F:
        """Return the builder for `name`. Raises EdgekitError naming the valid choices."""
        try:
            return self._entries[name]
        except KeyError:
            choices = ", ".join(self.names()) or "(none registered)"
            msg = f"unknown {self.kind} {name!r}; expected one of: {choices}"
            raise EdgekitError(msg) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries
