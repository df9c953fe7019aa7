"""The state values, in memory: the core reads and changes them here and asks the store
to keep each change (a ``PutState`` / ``DropState`` write). Loaded from the store at
start-up, so reads never wait for the disk."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from iii_daemon.unsettled import MISSING, Unsettled


class StateTable:
    def __init__(self, rows: Iterable[tuple[str, str, Any]] = ()) -> None:
        self._scopes: dict[str, dict[str, Any]] = {}
        #: Changes whose writes are still on their way to the disk.
        self.unsettled: Unsettled[tuple[str, str]] = Unsettled(
            lambda key, value, out: self.set(key[0], key[1], value))
        for scope, key, value in rows:
            self.set(scope, key, value)

    def get(self, scope: str, key: str) -> Any:
        values = self._scopes.get(scope)
        return MISSING if values is None else values.get(key, MISSING)

    def set(self, scope: str, key: str, value: Any) -> None:
        """Set ``scope``/``key``; ``MISSING`` deletes it."""
        if value is MISSING:
            self.delete(scope, key)
            return
        values = self._scopes.get(scope)
        if values is None:
            values = self._scopes[scope] = {}
        values[key] = value

    def delete(self, scope: str, key: str) -> None:
        values = self._scopes.get(scope)
        if values is not None:
            values.pop(key, None)
            if not values:
                del self._scopes[scope]

    def items(self, scope: str) -> list[tuple[str, Any]]:
        """``(key, value)`` pairs of ``scope``, sorted by key."""
        return sorted(self._scopes.get(scope, {}).items())

    def scopes(self) -> list[str]:
        """The scopes that hold keys, sorted."""
        return sorted(self._scopes)
