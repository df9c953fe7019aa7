"""The history ring of events, cheap to add to.

Most events are dicts. An invocation's is kept as its parts (:class:`Finished`) and made
into a dict when read (``engine::events::list``, a watcher's replay): building it, with
its previews, is the larger part of what an event costs, and most are never read.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iii_sdk import protocol as p

if TYPE_CHECKING:
    from iii_daemon.invocations import Invocation

#: How much of a payload or result an ``invocation.finished`` event shows.
PREVIEW_BYTES = 512
STACK_BYTES = 8192


def head(raw: Any) -> bytes:
    """What an event keeps of a payload: one byte more than a preview shows, enough to
    know it was cut."""
    return bytes(raw) if len(raw) <= PREVIEW_BYTES else \
        bytes(memoryview(raw)[:PREVIEW_BYTES + 1])


def preview(raw: Any) -> str:
    """The start of a JSON payload as text (an ellipsis when cut)."""
    data = bytes(raw) if len(raw) <= PREVIEW_BYTES else \
        bytes(memoryview(raw)[:PREVIEW_BYTES])
    text = data.decode(errors="replace")
    return text if len(raw) <= PREVIEW_BYTES else text + "…"


def error_of(error: Any) -> dict[str, Any] | None:
    """``{code, message}`` of an ErrorBody or a worker's error dict."""
    if error is None:
        return None
    if isinstance(error, p.ErrorBody):
        return {"code": error.code, "message": error.message}
    return {"code": error.get("code"), "message": error.get("message")}


@dataclass(slots=True, eq=False)
class Finished:
    """An ``invocation.finished`` event, not yet made into a dict."""

    seq: int
    wall: float
    inv: Invocation
    result: Any
    error: Any
    duration_ms: float
    #: The dict, once made (a watcher's and the history's read share it).
    made: dict[str, Any] | None = None

    def event(self) -> dict[str, Any]:
        if self.made is None:
            self.made = self._make()
        return self.made

    def _make(self) -> dict[str, Any]:
        inv, error = self.inv, self.error
        fields: dict[str, Any] = {
            "seq": self.seq, "event": "invocation.finished", "time": round(self.wall, 3),
            "function_id": inv.function_id, "invocation_id": inv.id,
            "worker_id": inv.worker_id, "source": inv.source, "action": inv.action,
            "status": "ok" if error is None else "error",
            "duration_ms": round(self.duration_ms, 3), "error": error_of(error),
            "payload": preview(inv.payload),
            "result": None if error is not None or self.result is None
            else preview(self.result)}
        stack = error.stacktrace if isinstance(error, p.ErrorBody) else \
            error.get("stacktrace") if isinstance(error, dict) else None
        if isinstance(stack, str) and stack:
            fields["stacktrace"] = stack[:STACK_BYTES]
        if inv.tags:
            fields.update(inv.tags)
        return fields


class EventLog:
    """The last ``size`` events, oldest first; reads give dicts."""

    def __init__(self, size: int) -> None:
        self._items: collections.deque[dict[str, Any] | Finished] = \
            collections.deque(maxlen=size)

    def append(self, item: dict[str, Any] | Finished) -> None:
        self._items.append(item)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for item in self._items:
            yield item if type(item) is dict else item.event()  # type: ignore[union-attr]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self._items[index]
        return item if isinstance(item, dict) else item.event()
