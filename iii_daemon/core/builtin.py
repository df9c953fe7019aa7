"""What a function the daemon provides looks like."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from iii_daemon.core.effects import EVENTS, Persist
from iii_daemon.core.errors import CallError
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode

if TYPE_CHECKING:
    from iii_daemon.core.effects import AfterCommit, Output
    from iii_daemon.core.event_log import EventLog
    from iii_daemon.core.queues import Queues
    from iii_daemon.core.registry import Connection, Registry
    from iii_daemon.core.shared import SharedOps
    from iii_daemon.core.state_table import StateTable
    from iii_daemon.core.stats import Stats
    from iii_daemon.core.supervision import Supervisor
    from iii_daemon.core.triggers.base import Clock
    from iii_daemon.core.triggers.manager import TriggerManager
    from iii_daemon.core.writes import Write

log = logging.getLogger(__name__)


class CallContext(msgspec.Struct):
    """One call of a daemon function (a struct: one is made for every call)."""

    #: Who called: None when the daemon called it itself (e.g. as a trigger condition).
    conn: Connection | None
    data: Any
    #: Messages the function causes (triggers it fires) go here.
    out: Output
    clock: Clock
    #: What the call asked the store to keep: its answer waits until they committed.
    writes: list[Write] = msgspec.field(default_factory=list)
    #: Run in order once the writes landed, ``(failure, out)``, before the answer.
    then: list[AfterCommit] = msgspec.field(default_factory=list)
    #: The call's observe hops (``observe_depth``): triggers its writes fire carry them
    #: on, so an observer loop through state or streams meets the loop guard too.
    depth: int = 0

    def persist(self, write: Write, then: AfterCommit) -> None:
        """Keep ``write``; ``then(failure, out)`` runs when it committed (failure None)
        or did not."""
        self.writes.append(write)
        self.then.append(then)


class ChannelMaker(Protocol):
    """The driver's channel relay, as daemon functions see it."""

    def create_refs(self, buffer_size: int | None) -> dict[str, Any]:
        """``{writer, reader}`` refs of a new channel.

        Raises:
            CallError: no channel can be made (why is in the message).
        """


@dataclass(frozen=True, slots=True)
class Services:
    """What daemon functions may use: the parts of the core they need, never the router
    (they cannot route, answer or reach into invocations behind its back)."""

    registry: Registry
    #: State values (kept in memory; changes are persisted through the call context).
    state: StateTable[str]
    #: Stream items by ``(stream_name, group_id)``, kept like state values.
    streams: StateTable[tuple[str, str]]
    triggers: TriggerManager
    #: Recent events, newest last (engine::events::list).
    events: EventLog
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
    #: Makes channels (the driver's; None: this daemon has none).
    channels: ChannelMaker | None = None
    #: Calls, errors and durations per function.
    stats: Stats | None = None
    #: How many connections watch the event stream (engine::status).
    watching: Callable[[], int] = lambda: 0
    #: Call a function the daemon's way (for :class:`Later` outcomes):
    #: ``call(function_id, data, then, out)``, ``then(result, error, out)`` once.
    call: Callable[[str, Any, Answer, Output], None] | None = None
    #: A worker told its features (``engine::workers::register``): the owner side of
    #: observe.v1 starts for it (``observe_declared(conn, out)``).
    observe_declared: Callable[[Connection, Output], None] = lambda _conn, _out: None
    #: Stream-socket clients and their subscriptions, counted (engine::status).
    stream_clients: Callable[[], tuple[int, int]] = lambda: (0, 0)
    #: Observers as ``engine::observers::list`` rows (``rows(function_id or None)``).
    observers: Callable[[str | None], list[dict[str, Any]]] = lambda _function_id: []
    #: The managed workers (None: this daemon runs none, e.g. a test's router).
    supervisor: Supervisor | None = None
    #: The backend several daemons share (None: this daemon shares nothing).
    shared: SharedOps | None = None
    #: That backend when it also holds state values, stream items (``[state] backend``,
    #: ``[streams] backend``); None: this daemon's own store has them.
    shared_state: SharedOps | None = None
    shared_streams: SharedOps | None = None
    #: Work waiting for its turn, per key (see :func:`in_turn`).
    turns: dict[Any, collections.deque[Callable[[Output], None]]] = dataclass_field(
        default_factory=dict)

    def worker_id(self, conn_id: int | None) -> str | None:
        conn = self.registry.connections.get(conn_id) if conn_id is not None else None
        return conn.worker_id if conn is not None else None


@dataclass(frozen=True, slots=True)
class AfterWrites:
    """What a daemon function returns when its result reads a change whose write is still
    in flight: ``compute()`` runs once every write made before has landed (or failed and
    been undone), so nobody hears of a change before it is on disk."""

    compute: Callable[[], Any]


@dataclass(frozen=True, slots=True)
class Later:
    """What a daemon function returns when its outcome comes from elsewhere (a worker
    serving a custom stream backend): ``start(answer, out)`` runs at once and must see
    to it that ``answer(result, error, out)`` is called once, now or later."""

    start: Callable[[Answer, Output], None]


Handler = Callable[[Services, CallContext], Any]
#: How a daemon function's outcome reaches whoever called it: ``(result, error, out)``.
Answer = Callable[[Any, "p.ErrorBody | None", "Output"], None]


@dataclass(frozen=True, slots=True)
class BuiltinFunction:
    id: str
    description: str
    handler: Handler


def field(data: Any, name: str, kind: type, optional: bool = False) -> Any:
    """``data[name]`` checked for type; raises ``bad_request`` naming what is wrong."""
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


def run_builtin(services: Services, builtin: BuiltinFunction, ctx: CallContext,
                answer: Answer) -> None:
    """Run a daemon function; ``answer`` gets its outcome at once, or, when it asked the
    store to keep something (or read something still on its way there), once that
    landed: a failed write is an ``invocation_failed`` error."""
    result: Any = None
    error: p.ErrorBody | None = None
    try:
        result = builtin.handler(services, ctx)
    except CallError as exc:
        error = p.ErrorBody(code=exc.code, message=exc.message)
    except Exception as exc:  # a daemon bug must not take the daemon down
        error = _bug(builtin, exc)
    out = ctx.out
    if isinstance(result, Later):
        try:
            result.start(answer, out)
        except Exception as exc:  # a daemon bug: the caller still hears of it
            answer(None, _bug(builtin, exc), out)
        return
    if isinstance(result, AfterWrites):  # it read a change still on its way to disk
        compute = result.compute

        def later(failure: str | None, out: Output) -> None:
            try:
                value, late_error = compute(), None
            except CallError as exc:
                value, late_error = None, p.ErrorBody(code=exc.code, message=exc.message)
            answer(value, late_error, out)

        out.append((EVENTS, Persist((), later)))
        return
    if not ctx.writes:
        answer(result, error, out)
        return
    then = ctx.then

    def landed(failure: str | None, out: Output) -> None:
        for step in then:
            step(failure, out)
        if failure is None:
            answer(result, error, out)
        else:
            answer(None, p.ErrorBody(code=ErrorCode.INVOCATION_FAILED, message=failure), out)

    out.append((EVENTS, Persist(tuple(ctx.writes), landed)))


def _bug(builtin: BuiltinFunction, exc: Exception) -> p.ErrorBody:
    """A daemon function failed where it should not: logged, and the caller's error."""
    log.exception("engine function %s failed", builtin.id)
    return p.ErrorBody(code=ErrorCode.INVOCATION_FAILED, message=f"{type(exc).__name__}: {exc}")


def in_turn(services: Services, key: Any, run: Callable[[Output], None],
            out: Output) -> None:
    """Run ``run(out)`` now if nothing runs for ``key``, else after what does: one at a
    time per key, in order. Whatever runs must call :func:`next_turn` when done."""
    waiting = services.turns.get(key)
    if waiting is None:
        services.turns[key] = collections.deque()
        run(out)
    else:
        waiting.append(run)


def next_turn(services: Services, key: Any, out: Output) -> None:
    """What ran for ``key`` is done: start the next in line."""
    waiting = services.turns.get(key)
    if waiting:
        waiting.popleft()(out)
    else:
        services.turns.pop(key, None)
