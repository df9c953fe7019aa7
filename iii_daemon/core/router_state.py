"""What every part of the router shares: its state (declared here, set by
:class:`~iii_daemon.core.router.Router`), the clock, events, and the small questions the
trigger manager, queues and observers ask of their host."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

from iii_daemon.core.builtin import BuiltinFunction, Services
from iii_daemon.core.effects import EVENTS, Emit, Output
from iii_daemon.core.event_log import EventLog
from iii_daemon.core.invocations import InvocationTable
from iii_daemon.core.observers import Observers
from iii_daemon.core.queues import Queues
from iii_daemon.core.registry import Connection, Registry
from iii_daemon.core.shared import SharedOps
from iii_daemon.core.state_table import StateTable
from iii_daemon.core.stats import Stats
from iii_daemon.core.supervision import Supervisor
from iii_daemon.core.triggers.base import Binding, Clock
from iii_daemon.core.triggers.manager import TriggerManager
from iii_daemon.core.triggers.queue import QueueType
from iii_daemon.core.watchers import Watcher
from iii_sdk import protocol as p

if TYPE_CHECKING:
    from iii_daemon.core.observer_owners import ObserverOwners

log = logging.getLogger("iii_daemon.core.router")

RESERVED_PREFIX = "engine::"
RESERVED_ACTIONS = frozenset({"void", "enqueue"})
#: What ``workerregistered`` tells the SDKs this daemon supports: observers, and
#: workers that run their own functions in-process (core/observer_owners.py).
FEATURES = ["observe.v1", "local-dispatch.v1"]


def make_error(code: str, message: str) -> p.ErrorBody:
    return p.ErrorBody(code=code, message=message)


def valid_error(error: Any) -> Any:
    """A worker's error object as the caller gets it: unchanged when well formed (extra
    fields included), else an ``invocation_failed`` that shows what came."""
    body = p.error_body(error)
    return error if isinstance(error, dict) and body.code == error.get("code") \
        and body.message == error.get("message") else body


def worker_name(conn: Connection) -> str:
    """A worker as the log names it: its name when it gave one, else its id."""
    name = conn.info.get("name")
    return f"{name!r} ({conn.worker_id})" if isinstance(name, str) else conn.worker_id


class RouterState:
    """The router's state and what its handlers share."""

    info: dict[str, Any]
    registry: Registry
    invocations: InvocationTable
    call_timeout_ms: int
    builtins: dict[str, BuiltinFunction]
    state: StateTable[str]
    streams: StateTable[tuple[str, str]]
    triggers: TriggerManager
    queues: Queues
    http_allowed_env: frozenset[str]
    observers: Observers
    observer_owners: ObserverOwners
    paced_queues: bool
    calls_routed: int
    events: EventLog
    watchers: dict[int, Watcher]
    _watching_starts: int
    stats: Stats
    services: Services
    supervisor: Supervisor
    shared: SharedOps | None
    _event_seq: int
    _wall_offset: float
    _now: float

    def tick_clock(self, now: float, wall: float) -> None:
        self._wall_offset = wall - now
        self._now = now
        self.supervisor.wall_offset = self._wall_offset

    @property
    def clock(self) -> Clock:
        """The time of the message or tick being handled (built only when needed:
        routing a call never asks)."""
        return Clock(self._now, self._now + self._wall_offset)

    def worker_id(self, conn_id: int | None) -> str | None:
        conn = self.registry.connections.get(conn_id) if conn_id is not None else None
        return conn.worker_id if conn is not None else None

    def serves(self, function_id: str) -> bool:
        """Someone serves ``function_id``: a worker, or the daemon itself."""
        return function_id in self.registry.functions or function_id in self.builtins

    def binding(self, trigger_id: str) -> Binding | None:
        return self.triggers.bindings.get(trigger_id)

    def _queue_type(self) -> QueueType:
        return cast(QueueType, self.triggers.types["queue"])

    def queue_consumer(self, topic: str) -> Binding | None:
        return self._queue_type().consumer(topic)

    def queue_bindings(self) -> list[Binding]:
        return self._queue_type().bindings()

    def served_functions(self) -> frozenset[str]:
        """The functions workers serve here."""
        return frozenset(self.registry.functions)

    def record(self, kind: str, out: Output, watchers_only: bool = False,
               **fields: Any) -> None:
        """An event: kept in the history ring (``engine::events::list``; not with
        ``watchers_only``) and put out as an :class:`Emit` effect for the driver to fan
        out to watchers."""
        self._event_seq += 1
        event = {"seq": self._event_seq, "event": kind,
                 "time": round(self._now + self._wall_offset, 3), **fields}
        if not watchers_only:
            self.events.append(event)
        if self.watchers:
            out.append((EVENTS, Emit(event)))

    def _refused(self, conn: Connection, what: str, registration_id: str, reason: str,
                 out: Output) -> None:
        log.info("refused %s %r of worker %s: %s", what, registration_id, worker_name(conn),
                 reason)
        self.record("registration.refused", out, worker_id=conn.worker_id, what=what,
                    id=registration_id, reason=reason)

    def _pump_now(self, out: Output) -> None:
        """Deliver what became deliverable, unless the driver paces the queues."""
        if self.queues.dirty and not self.paced_queues:
            self.queues.pump(out)
