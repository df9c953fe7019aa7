"""What a function the daemon provides looks like."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING, Any

from iii_daemon.errors import CallError

if TYPE_CHECKING:
    import collections

    from iii_daemon.effects import AfterCommit, Output
    from iii_daemon.queues import Queues
    from iii_daemon.registry import Connection, Registry
    from iii_daemon.state_table import StateTable
    from iii_daemon.triggers.base import Clock
    from iii_daemon.triggers.manager import TriggerManager
    from iii_daemon.writes import Write


@dataclass(slots=True)
class CallContext:
    #: Who called: None when the daemon called it itself (e.g. as a trigger condition).
    conn: Connection | None
    data: Any
    #: Messages the function causes (triggers it fires) go here.
    out: Output
    clock: Clock
    #: What the call asked the store to keep: its answer waits until they committed.
    writes: list[Write] = dataclass_field(default_factory=list)
    #: Run in order once the writes landed, ``(failure, out)``, before the answer.
    then: list[AfterCommit] = dataclass_field(default_factory=list)

    def persist(self, write: Write, then: AfterCommit) -> None:
        """Keep ``write``; ``then(failure, out)`` runs when it committed (failure None)
        or did not."""
        self.writes.append(write)
        self.then.append(then)


@dataclass(frozen=True, slots=True)
class Services:
    """What daemon functions may use: the parts of the core they need, never the router
    (they cannot route, answer or reach into invocations behind its back)."""

    registry: Registry
    #: State values (kept in memory; changes are persisted through the call context).
    state: StateTable
    triggers: TriggerManager
    #: Recent events, newest last (engine::events::list).
    events: collections.deque[dict[str, Any]]
    #: Static facts about this daemon (pid, socket, listeners, ...).
    info: dict[str, Any]
    #: Every daemon function, by id (engine::functions::list).
    builtins: dict[str, BuiltinFunction]
    #: How many calls are in flight (engine::status).
    in_flight: Callable[[], int]
    #: Record an event: ``record(kind, out, **fields)``.
    record: Callable[..., None]
    #: The core's time now (after a write landed, later than the call's ``ctx.clock``).
    clock: Callable[[], Clock]
    #: Durable queues.
    queues: Queues

    def worker_id(self, conn_id: int | None) -> str | None:
        conn = self.registry.connections.get(conn_id) if conn_id is not None else None
        return conn.worker_id if conn is not None else None


@dataclass(frozen=True, slots=True)
class AfterWrites:
    """What a daemon function returns when its result reads a change whose write is still
    in flight: ``compute()`` runs once every write made before has landed (or failed and
    been undone), so nobody hears of a change before it is on disk."""

    compute: Callable[[], Any]


Handler = Callable[[Services, CallContext], Any]


@dataclass(frozen=True, slots=True)
class BuiltinFunction:
    id: str
    description: str
    handler: Handler


def field(data: Any, name: str, kind: type, optional: bool = False) -> Any:
    """``data[name]`` checked for type; raises ``bad_request`` naming what is wrong."""
    from iii_sdk.error_codes import ErrorCode

    if not isinstance(data, dict):
        raise CallError(ErrorCode.BAD_REQUEST, "the payload must be an object")
    value = data.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is str and not value):
        raise CallError(ErrorCode.BAD_REQUEST,
                        f"'{name}' must be a{'' if kind is int else ' non-empty'} "
                        f"{kind.__name__}")
    return value
