"""Who watches the daemon's events, and which events each wants (pure).

``watch {filter?, replay?}`` (extension) subscribes a connection: ``filter`` is
``{function?: GLOB, kinds?: [KIND, ...], errors?: bool}`` where a kind is an event name
(``invocation.finished``) or a prefix of one (``invocation``, ``queue``;
``invocation.started`` comes only to a watcher whose kinds name it or ``invocation``,
as it doubles the stream); ``errors``
keeps only failures (an invocation with an error, a skipped firing, a refused
registration, retries and dead letters). ``replay`` (default 100) recent events from
the history come first. A slow watcher never slows anyone: :func:`fan_out` drops what
does not fit its buffer and counts it, and the watcher is told ``{event: "missed",
count}`` before the next event that fits; the driver only moves the bytes.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iii_daemon.core.event_log import frame as frame_of

DEFAULT_REPLAY = 100
#: Events that are failures for ``errors: true`` (besides those with an ``error``).
FAILURES = frozenset({"trigger.skipped", "registration.refused", "queue.retry",
                      "queue.dead_letter", "stream.refused"})


#: Every event the daemon records (a watcher's kinds name these or a prefix of them).
EVENT_KINDS = ("invocation.started", "invocation.finished", "trigger.fired",
               "trigger.skipped", "worker.joined", "worker.left", "registration",
               "registration.refused", "observer.changed", "observer.skipped", "queue.retry",
               "queue.dead_letter", "managed.started", "managed.exited", "stream.joined",
               "stream.left", "stream.refused")
#: The kinds a watcher may ask for: the events and their families.
KNOWN_KINDS = frozenset(EVENT_KINDS) | {kind.split(".")[0] for kind in EVENT_KINDS}


class FilterError(ValueError):
    """A watch filter that cannot be used; the message says why."""


@dataclass(slots=True, eq=False)
class Watcher:
    function: re.Pattern[str] | None = None
    kinds: tuple[str, ...] = ()
    errors: bool = False
    #: Events dropped since the last one delivered (the driver counts them).
    missed: int = 0
    #: Whether it wants ``invocation.started`` (those are made only for watchers).
    started: bool = field(default=False)
    #: The last event before it subscribed (its replay has those; live ones come after).
    since: int = 0
    #: At most this many live events a second (a sample beyond it), or None: all.
    max_rate: int | None = None
    #: The sample's allowance: events it may still get now, and when that was counted.
    allowance: float = 0.0
    counted_at: float = 0.0
    #: Events left out of the sample since it was last told (the driver counts them).
    skipped: int = 0

    def wants(self, event: dict[str, Any]) -> bool:
        kind = event["event"]
        if kind == "invocation.started" and not self.started:
            return False
        if self.kinds and not any(kind == k or kind.startswith(k + ".") for k in self.kinds):
            return False
        if self.function is not None:
            function_id = event.get("function_id")
            if not isinstance(function_id, str) or not self.function.match(function_id):
                return False
        if self.errors:
            return failed(event)
        return True


    def take(self, events: list[Any], frames: list[bytes | None], held: int, limit: int,
             now: float) -> bytearray | None:
        """This watcher's frames of ``events`` (dicts, or :class:`Finished`; ``frames``
        caches each event's frame across watchers), within ``limit`` bytes of output
        with ``held`` unsent already: what does not fit is dropped and counted, and told
        as ``missed`` before the next event that fits. With ``max_rate``, a sample (every
        failure, at most a second's allowance of the rest), and how many it left out.
        None when it gets nothing."""
        buf: bytearray | None = None
        since, rate = self.since, self.max_rate
        if rate is not None:  # a second's worth at most
            self.allowance = min(float(rate), self.allowance + (now - self.counted_at) * rate)
            self.counted_at = now
        for index, event in enumerate(events):
            if event.get("seq", 0) <= since or not self.wants(event):
                continue
            if rate is not None and not failed(event):  # failures always go
                if self.allowance < 1:
                    self.skipped += 1
                    continue
                self.allowance -= 1
            if held > limit:
                self.missed += 1
                continue
            frame = frames[index]
            if frame is None:
                frame = frames[index] = (frame_of(event) if type(event) is dict
                                         else event.frame())
            if not frame:
                continue
            if buf is None:
                buf = bytearray()
            if self.missed:
                held += self._tell_missed(buf)
            buf += frame
            held += len(frame)
        if buf is not None and self.skipped:  # a few times a second at most
            buf += b'{"type":"event","event":"sampled","skipped":%d}\n' % self.skipped
            self.skipped = 0
        return buf

    def replay(self, event: dict[str, Any]) -> bytes:
        """One event of its replay, after the count of what it missed, if any."""
        buf = bytearray()
        if self.missed:
            self._tell_missed(buf)
        buf += frame_of(event)
        return bytes(buf)

    def _tell_missed(self, buf: bytearray) -> int:
        marker = b'{"type":"event","event":"missed","count":%d}\n' % self.missed
        buf += marker
        self.missed = 0
        return len(marker)


def fan_out(watchers: dict[int, Watcher], events: list[Any],
            held: Callable[[int], int | None], limit: int, now: float
            ) -> dict[int, bytearray]:
    """Each watcher's frames of ``events`` (see :meth:`Watcher.take`), by connection;
    ``held(conn_id)`` is what its connection holds unsent, None when it is gone. Watcher
    by watcher, so each looks up its connection once, not once per event."""
    frames: list[bytes | None] = [None] * len(events)
    shares: dict[int, bytearray] = {}
    for conn_id, watcher in watchers.items():
        unsent = held(conn_id)
        if unsent is None:
            continue
        share = watcher.take(events, frames, unsent, limit, now)
        if share is not None:
            shares[conn_id] = share
    return shares


def failed(event: dict[str, Any]) -> bool:
    """An error, a skip, a retry, a dead letter: what a sample never leaves out."""
    return event.get("error") is not None or event["event"] in FAILURES


def parse(raw: Any) -> Watcher:
    """A watcher from a ``watch`` message's filter.

    Raises:
        FilterError: the filter is not an object of known keys and types.
    """
    if raw is None:
        return Watcher()
    if not isinstance(raw, dict):
        raise FilterError("filter must be an object {function?, kinds?, errors?, "
                          "max_rate?}")
    unknown = set(raw) - {"function", "kinds", "errors", "max_rate"}
    if unknown:
        raise FilterError(f"unknown filter keys: {', '.join(sorted(unknown))} (known: "
                          f"function, kinds, errors, max_rate)")
    max_rate = raw.get("max_rate")
    if max_rate is not None and (not isinstance(max_rate, int) or isinstance(max_rate, bool)
                                 or not 1 <= max_rate <= 1_000_000):
        raise FilterError("filter.max_rate must be a whole number of events a second, "
                          "1 to 1000000")
    function = raw.get("function")
    if function is not None and (not isinstance(function, str) or not function):
        raise FilterError("filter.function must be a non-empty glob, e.g. 'orders::*'")
    kinds = raw.get("kinds") or []
    if not isinstance(kinds, list) or not all(isinstance(k, str) and k for k in kinds):
        raise FilterError("filter.kinds must be a list of event kinds, e.g. "
                          "['invocation', 'trigger.skipped']")
    errors = raw.get("errors", False)
    if not isinstance(errors, bool):
        raise FilterError("filter.errors must be true or false")
    kinds_tuple = tuple(k.removesuffix(".*") for k in kinds)
    unknown_kinds = [k for k in kinds_tuple if k not in KNOWN_KINDS]
    if unknown_kinds:
        raise FilterError(f"unknown event kind {unknown_kinds[0]!r}; kinds: "
                          f"{', '.join(sorted(KNOWN_KINDS))}")
    if function is not None and _unclosed_bracket(function):
        raise FilterError(f"the glob {function!r} has a '[' without its ']' (a set like "
                          f"[ab]; [[] matches a '[' itself)")
    # Started events double the stream: made only for a watcher that names them (or
    # "invocation"), never for errors only.
    started = not errors and any(k in ("invocation", "invocation.started")
                                 for k in kinds_tuple)
    return Watcher(function=re.compile(fnmatch.translate(function)) if function else None,
                   kinds=kinds_tuple, errors=errors, started=started, max_rate=max_rate,
                   allowance=float(max_rate or 0))


def _unclosed_bracket(glob: str) -> bool:
    """A ``[`` that opens no set (fnmatch would quietly match it as itself)."""
    i = 0
    while i < len(glob):
        if glob[i] == "[":
            end = i + 1
            if end < len(glob) and glob[end] == "!":
                end += 1
            if end < len(glob) and glob[end] == "]":
                end += 1
            end = glob.find("]", end)
            if end < 0:
                return True
            i = end
        i += 1
    return False
