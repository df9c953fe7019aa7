"""Watching the daemon: ``watch`` (the event stream) and ``observe`` / ``unobserve``
(observe.v1)."""

from __future__ import annotations

from iii_daemon.core.effects import Emit, Output
from iii_daemon.core.registry import Connection
from iii_daemon.core.router_state import RouterState
from iii_daemon.core.watchers import DEFAULT_REPLAY, FilterError
from iii_daemon.core.watchers import parse as parse_filter
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode


class Watching(RouterState):
    """Watchers and observers."""

    def _on_observe(self, conn: Connection, msg: p.Observe, now: float, out: Output) -> None:
        self.observers.observe(conn, msg, p.encode(msg), out)

    def _on_unobserve(self, conn: Connection, msg: p.Unobserve, now: float,
                      out: Output) -> None:
        self.observers.unobserve(conn, msg.id, out)

    def _on_observer_ack(self, conn: Connection, msg: p.ObserverAck, now: float,
                         out: Output) -> None:
        self.observer_owners.acked(conn, msg, out)

    def _on_invocations_observed(self, conn: Connection, msg: p.InvocationsObserved,
                                 now: float, out: Output) -> None:
        self.observer_owners.reported(conn, msg, out)

    def _on_local_invocation_stats(self, conn: Connection, msg: p.LocalInvocationStats,
                                   now: float, out: Output) -> None:
        self.observer_owners.local_stats(conn, msg, now)

    def _on_watch(self, conn: Connection, msg: p.Watch, now: float, out: Output) -> None:
        """Stream events to this connection: the recent ones that match first."""
        try:
            watcher = parse_filter(msg.filter)
        except FilterError as exc:
            out.append((conn.id, p.Error(code=ErrorCode.BAD_REQUEST, message=str(exc),
                                         request_type="watch")))
            return
        replay = DEFAULT_REPLAY if msg.replay is None else msg.replay
        if replay < 0:
            out.append((conn.id, p.Error(code=ErrorCode.BAD_REQUEST, request_type="watch",
                                         message="replay must be 0 or more")))
            return
        previous = self.watchers.get(conn.id)
        if previous is not None and previous.started:
            self._watching_starts -= 1
        watcher.since = self._event_seq
        self.watchers[conn.id] = watcher
        if watcher.started:
            self._watching_starts += 1
        recent = [e for e in self.events if watcher.wants(e)][-replay:] if replay else []
        out.append((conn.id, Emit({"seq": self._event_seq, "event": "watching",
                                   "time": round(self.clock.wall, 3),
                                   "replayed": len(recent)}, to=conn.id)))
        for event in recent:
            out.append((conn.id, Emit(event, to=conn.id)))
