"""Changes made in memory whose writes have not reached the disk yet.

The core changes a value at once (later calls must see it) and asks the store to keep
it. Should a write fail (disk full), memory must go back to what the disk holds; with
several changes of the same key in flight, some landing and some not, that is the
value of the last one that landed after the ones before it resolved. This module works
that out, for any kind of keyed value (state values, daemon-owned triggers).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

if TYPE_CHECKING:
    from iii_daemon.core.effects import AfterCommit, Output

K = TypeVar("K", bound=Hashable)

#: The value of a key that does not exist (``None`` is a value).
MISSING: Final = object()


def or_none(value: Any) -> Any:
    """``value``, or None for ``MISSING`` (what callers and events are told)."""
    return None if value is MISSING else value


@dataclass(slots=True, eq=False)
class Change:
    value: Any
    landed: bool = False
    failed: bool = False


class Unsettled(Generic[K]):
    def __init__(self, restore: Callable[[K, Any, Output], None]) -> None:
        #: Puts a value (or MISSING) back into memory after a write failed.
        self._restore = restore
        self._keys: dict[K, tuple[list[Any], collections.deque[Change]]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[K]:
        return iter(self._keys)

    def change(self, key: K, before: Any, value: Any) -> AfterCommit:
        """``key`` went from ``before`` (what memory held) to ``value`` in memory; the
        function returned is to run when its write landed or failed."""
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = ([before], collections.deque())
        change = Change(value)
        entry[1].append(change)

        def landed(failure: str | None, out: Output) -> None:
            change.landed, change.failed = True, failure is not None
            self._resolve(key, out)

        return landed

    def _resolve(self, key: K, out: Output) -> None:
        entry = self._keys.get(key)
        if entry is None:
            return
        disk, changes = entry
        any_failed = False
        # Changes that resolved in order are what the disk holds now.
        while changes and changes[0].landed:
            change = changes.popleft()
            any_failed |= change.failed
            if not change.failed:
                disk[0] = change.value
        any_failed |= any(c.failed for c in changes)
        if any_failed:
            # Memory holds the newest change that did not fail, else what the disk has.
            newest = next((c.value for c in reversed(changes) if not c.failed), disk[0])
            self._restore(key, newest, out)
        if not changes:
            del self._keys[key]
