"""Kept values, in memory: state values by ``(scope, key)`` and stream items by
``((stream_name, group_id), item_id)``. The core reads and changes them here and asks
the store to keep each change; loaded from the store at start-up, so reads never wait
for the disk.

Each value is held as its JSON text (bytes), decoded when read: a million keys of a
hundred bytes then take about a third of the memory they take as Python objects, and
a value read is the caller's own copy (changing it changes nothing kept)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, Generic, TypeVar

import msgspec

from iii_daemon.core.unsettled import MISSING, Unsettled

_encode = msgspec.json.encode
_decode = msgspec.json.decode

#: What groups keys: a state scope (str), a stream's ``(stream_name, group_id)``.
S = TypeVar("S", bound=Hashable)


class StateTable(Generic[S]):
    def __init__(self, rows: Iterable[tuple[S, str, Any]] = ()) -> None:
        self._scopes: dict[S, dict[str, str | bytes]] = {}
        #: Changes whose writes are still on their way to the disk.
        self.unsettled: Unsettled[tuple[S, str]] = Unsettled(
            lambda key, value, out: self.set(key[0], key[1], value))
        for scope, key, value in rows:
            self.set(scope, key, value)

    def get(self, scope: S, key: str) -> Any:
        values = self._scopes.get(scope)
        text = None if values is None else values.get(key)
        return MISSING if text is None else _decode(text)

    def set(self, scope: S, key: str, value: Any) -> None:
        """Set ``scope``/``key``; ``MISSING`` deletes it."""
        if value is MISSING:
            self.delete(scope, key)
            return
        self.set_json(scope, key, _encode(value))

    def set_json(self, scope: S, key: str, text: str | bytes) -> None:
        """Set ``scope``/``key`` to a value given as its JSON text (valid: the store
        checked it when it loaded it)."""
        values = self._scopes.get(scope)
        if values is None:
            values = self._scopes[scope] = {}
        values[key] = text

    def delete(self, scope: S, key: str) -> None:
        values = self._scopes.get(scope)
        if values is not None:
            values.pop(key, None)
            if not values:
                del self._scopes[scope]

    def items(self, scope: S) -> list[tuple[str, Any]]:
        """``(key, value)`` pairs of ``scope``, sorted by key."""
        return [(key, _decode(text))
                for key, text in sorted(self._scopes.get(scope, {}).items())]

    def scopes(self) -> list[S]:
        """The scopes that hold keys, sorted."""
        return sorted(self._scopes)  # type: ignore[type-var]

    def in_flight(self, scope: S) -> bool:
        """Whether a change in ``scope`` is still on its way to the disk."""
        return any(unsettled[0] == scope for unsettled in self.unsettled)
