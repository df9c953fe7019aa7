"""The history ring of events, cheap to add to.

Most events are dicts. An invocation's is kept as its parts (:class:`Finished`) and made
into a dict when read (``engine::events::list``, a watcher's replay): building it, with
its previews, is the larger part of what an event costs, and most are never read.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from iii_sdk import protocol as p

if TYPE_CHECKING:
    from iii_daemon.core.invocations import Invocation

log = logging.getLogger(__name__)

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


_FRAME_HEAD = b'{"type":"event",'


def frame(event: dict[str, Any]) -> bytes:
    """An event as a watcher's ``event`` frame (a line); one that cannot be encoded is
    logged and becomes nothing."""
    try:
        return _FRAME_HEAD + msgspec.json.encode(event)[1:] + b"\n"
    except (TypeError, msgspec.EncodeError):
        log.exception("cannot encode a %s event; dropped", event.get("event"))
        return b""


class _Succeeded(msgspec.Struct):
    """The frame of a call that succeeded, with nothing extra: the same keys, in the same
    order, as its dict (most events are these; encoding it makes no dict)."""

    seq: int
    event: str
    time: float
    function_id: str
    invocation_id: str
    worker_id: str | None
    source: str
    action: str
    status: str
    duration_ms: float
    error: None
    payload: str
    result: str | None


_encode_succeeded = msgspec.json.Encoder().encode


class Finished(msgspec.Struct, eq=False):
    """An ``invocation.finished`` event, not yet made into a dict. Watchers read the
    keys they filter on (``event``, ``seq``, ``function_id``, ``error``) without one.
    (A struct: one is made for every call.)"""

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

    def __getitem__(self, key: str) -> Any:
        return "invocation.finished" if key == "event" else self.event()[key]

    def get(self, key: str, default: Any = None) -> Any:
        if key == "event":
            return "invocation.finished"
        if key == "seq":
            return self.seq
        if key == "function_id":
            return self.inv.function_id
        if key == "error":
            return error_of(self.error)
        return self.event().get(key, default)

    def frame(self) -> bytes:
        """Its watcher frame: straight from the parts when the call succeeded with
        nothing extra (no dict made), else from the dict."""
        inv = self.inv
        if self.error is not None or inv.tags or self.made is not None:
            return frame(self.event())
        wire = _Succeeded(self.seq, "invocation.finished", round(self.wall, 3),
                          inv.function_id, inv.id, inv.worker_id, inv.source, inv.action,
                          "ok", round(self.duration_ms, 3), None, preview(inv.payload),
                          None if self.result is None else preview(self.result))
        return _FRAME_HEAD + _encode_succeeded(wire)[1:] + b"\n"

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
