"""The router's entry points for a shared backend: the answers to what the core asked
of it, and what other daemons (and this one) published through it.

Each published message reaches every daemon; a binding fires for it once in the
cluster: the first daemon to claim ``iii:once:TRIGGER_ID:MESSAGE_ID`` (an atomic
set-if-absent in the backend) fires it, the others let it be. Bindings of distinct ids
each fire, as on one daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

from iii_daemon.core.effects import Output
from iii_daemon.core.router_state import RouterState, log
from iii_daemon.core.shared_queues import SharedQueues
from iii_daemon.core.triggers.base import Binding
from iii_daemon.core.unsettled import MISSING, or_none
from iii_daemon.functions import stream as stream_functions

#: How long a claim on a firing lives in the backend (every daemon has seen the
#: message long before).
ONCE_TTL_MS = 60_000


class SharedEvents(RouterState):
    def shared_done(self, op_id: int, result: Any, error: str | None, now: float) -> Output:
        out: Output = []
        self._now = now
        if self.shared is not None:
            self.shared.done(op_id, result, error, out)
        self._pump_now(out)
        return out

    def shared_queue_announced(self, lane: str, now: float) -> Output:
        """The shared backend has a new message in ``lane`` (from any daemon): take it
        if this daemon serves its function."""
        out: Output = []
        self._now = now
        if isinstance(self.queues, SharedQueues):
            self.queues.announced(lane, out)
        return out

    def shared_queue_purged(self, queue: str, now: float) -> Output:
        """``queue`` was purged (on any daemon): drop what this daemon holds of it."""
        out: Output = []
        self._now = now
        if isinstance(self.queues, SharedQueues):
            self.queues.dropped(queue, out)
        return out

    def shared_queues_released(self, now: float) -> Output:
        """The daemon stops: every message it holds goes back to the backend, for the
        other daemons at once (not after the visibility timeout)."""
        out: Output = []
        self._now = now
        if isinstance(self.queues, SharedQueues):
            self.queues.give_back_all(out)
        return out

    def bridged_change(self, event: dict[str, Any], now: float) -> Output:
        """A state or stream change on the bridged engine (made through this daemon or
        directly there), as its trigger delivered it: this daemon's ``state`` or
        ``stream`` triggers that match it fire (the engine tells only this daemon)."""
        out: Output = []
        self._now = now
        type_id = event.get("type")
        if type_id not in ("state", "stream"):
            log.warning("ignored a change from the bridge of an unknown kind %r", type_id)
            return out
        kind = cast(Reactive, self.triggers.types[type_id])
        try:
            matching = kind.matching(event)
        except (KeyError, TypeError):  # not shaped as a change event
            log.warning("ignored a change from the bridge without its fields: %.200r", event)
            return out
        self.triggers.tell(type_id, event, out)
        for binding, payload in matching:
            self.triggers.fire_later(binding, payload)(out)
        return out

    def shared_published(self, message_id: str, topic: str, data: Any,
                         now: float) -> Output:
        """A message published on ``topic`` through the shared backend (by any daemon):
        each local binding fires for it if it claims the firing first."""
        return self._claim_and_fire("subscribe", {"topic": topic, "data": data},
                                    message_id, now)

    def shared_changed(self, change_id: str, space: str, scope: Any, key: str, kind: str,
                       old: Any, new: Any, now: float) -> Output:
        """A state value or stream item changed through the shared backend (on any
        daemon): the ``state`` or ``stream`` triggers it matches, once in the cluster
        each, with the event the embedded store would give."""
        old = MISSING if kind == "created" else old
        new = MISSING if kind == "deleted" else new
        if space == "stream" and isinstance(scope, list) and len(scope) == 2:
            event = stream_functions.change_event(self.clock.wall, (scope[0], scope[1]), key,
                                                  old, new)
            return self._claim_and_fire("stream", event, change_id, now)
        if space != "state":
            log.warning("ignored a change of an unknown kind %r", space)
            return []
        return self._claim_and_fire("state", {
            "type": "state", "event_type": f"state:{kind}", "scope": scope, "key": key,
            "old_value": or_none(old), "new_value": or_none(new)}, change_id, now)

    def _claim_and_fire(self, type_id: str, event: dict[str, Any], event_id: str,
                        now: float) -> Output:
        out: Output = []
        self._now = now
        self.triggers.tell(type_id, event, out)
        kind = cast(Reactive, self.triggers.types[type_id])
        for binding, payload in kind.matching(event):
            self.claim(binding, event_id, self.triggers.fire_later(binding, payload), out)
        return out

    def claim(self, binding: Binding, event_id: str, fire: Callable[[Output], None],
              out: Output) -> None:
        """``fire(out)`` if this daemon is the first to claim ``binding``'s firing for
        ``event_id`` (a message, a change, a cron tick); else nothing."""
        shared = self.shared
        if shared is None:
            fire(out)
            return

        def claimed(won: Any, error: str | None, out: Output) -> None:
            if error is not None:
                log.warning("trigger %s: cannot claim its firing for %s: %s", binding.id,
                            event_id, error)
            elif won:
                fire(out)

        shared.request("once", {"key": f"iii:once:{binding.id}:{event_id}",
                                "ttl_ms": ONCE_TTL_MS}, claimed, out)


class Reactive(Protocol):
    """A trigger type that picks its bindings for an event (``subscribe``, ``state``)."""

    def matching(self, event: dict[str, Any]) -> list[tuple[Binding, Any]]: ...
