"""The sans-I/O core: messages in, messages out.

The router knows nothing of sockets, event loops or JSON text. A driver feeds it decoded
messages with :meth:`Router.handle` (and connects, disconnects, bad frames, clock ticks)
and writes out what each call returns: a list of ``(connection id, message)`` pairs,
where the message may also be a :class:`Close` command for the driver. Time comes in as
an argument; :meth:`Router.next_deadline` says when the driver must call
:meth:`Router.expire`.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from msgspec import Raw

from iii_daemon.core import http_functions, http_requests, oversized
from iii_daemon.core.builtin import (
    Answer,
    BuiltinFunction,
    CallContext,
    ChannelMaker,
    Services,
    run_builtin,
)
from iii_daemon.core.effects import EVENTS, Close, Emit, HttpCall, Output, Persist
from iii_daemon.core.errors import TriggerError
from iii_daemon.core.event_log import EventLog, Finished, error_of, head, preview
from iii_daemon.core.http_requests import HttpRequest
from iii_daemon.core.invocations import Continuation, Invocation, InvocationTable
from iii_daemon.core.observers import Observers, depth_of, observed
from iii_daemon.core.queues import Queues
from iii_daemon.core.registry import ActionType, Connection, FunctionEntry, Registry
from iii_daemon.core.state_table import StateTable
from iii_daemon.core.stats import Stats
from iii_daemon.core.triggers.base import Binding, Clock
from iii_daemon.core.triggers.http import HttpType, Match
from iii_daemon.core.triggers.manager import TriggerManager
from iii_daemon.core.triggers.queue import QueueType
from iii_daemon.core.watchers import DEFAULT_REPLAY, FilterError, Watcher
from iii_daemon.core.watchers import parse as parse_filter
from iii_daemon.core.writes import Stored
from iii_daemon.functions import engine as engine_functions
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode
from iii_sdk.limits import MAX_TIMEOUT_MS
from iii_sdk.names import id_problem
from iii_sdk.protocol import NULL

log = logging.getLogger(__name__)

RESERVED_PREFIX = "engine::"
RESERVED_ACTIONS = frozenset({"void", "enqueue"})
#: What ``workerregistered`` tells the SDKs this daemon supports. Not
#: ``local-dispatch.v1``: every call is routed here, and the SDKs must keep sending them.
FEATURES = ["observe.v1"]


_Handler = Callable[["Router", Connection, Any, float, Output], None]


def _error(code: str, message: str) -> p.ErrorBody:
    return p.ErrorBody(code=code, message=message)


def _valid_error(error: Any) -> Any:
    """A worker's error object as the caller gets it: unchanged when well formed (extra
    fields included), else an ``invocation_failed`` that shows what came."""
    body = p.error_body(error)
    return error if isinstance(error, dict) and body.code == error.get("code") \
        and body.message == error.get("message") else body


def worker_name(conn: Connection) -> str:
    """A worker as the log names it: its name when it gave one, else its id."""
    name = conn.info.get("name")
    return f"{name!r} ({conn.worker_id})" if isinstance(name, str) else conn.worker_id


class Router:
    """Registry, routing and invocation tracking for every connection."""

    def __init__(self, builtins: dict[str, BuiltinFunction] | None = None,
                 info: dict[str, Any] | None = None, history: int = 10_000,
                 call_timeout_ms: int = 300_000,
                 queues: dict[str, dict[str, Any]] | None = None,
                 paced_queues: bool = False, channels: ChannelMaker | None = None,
                 http_allowed_env: frozenset[str] = frozenset()) -> None:
        #: Static facts about this daemon (pid, socket, listeners, ...) for engine::status.
        self.info: dict[str, Any] = info or {}
        self.registry = Registry()
        self.invocations = InvocationTable()
        #: The deadline of calls that set no timeout_ms: nothing is tracked forever.
        self.call_timeout_ms = call_timeout_ms
        self.builtins: dict[str, BuiltinFunction] = dict(
            engine_functions.BUILTINS if builtins is None else builtins
        )
        self.state: StateTable[str] = StateTable()
        self.streams: StateTable[tuple[str, str]] = StateTable()
        self.triggers = TriggerManager(self)
        #: Durable queues (config ``[queues.NAME]`` tables by name).
        self.queues = Queues(self, queues, call_timeout_ms)
        self._queue_type().on_bound = self.queues.adopt
        #: Environment variables an HTTP-invoked function's auth may name
        #: (config ``[http_functions] allowed_env``).
        self.http_allowed_env = http_allowed_env
        #: Observers (observe.v1): calls of their source functions call their targets.
        self.observers = Observers(self)
        #: False: queue deliveries go out with whatever made them possible. True: the
        #: driver paces them (:meth:`pump_queues` while ``queues.dirty``), so that a
        #: draining queue yields to calls routed meanwhile.
        self.paced_queues = paced_queues
        #: Calls routed from connections to workers so far: the driver's sign of
        #: foreground work (queue deliveries and the daemon's own calls do not count).
        self.calls_routed = 0
        #: Recent events (invocations finished, triggers fired or skipped, workers, queue
        #: retries ...), newest last.
        self.events = EventLog(history)
        #: Connections that sent ``watch``, with what they want.
        self.watchers: dict[int, Watcher] = {}
        #: How many watchers want ``invocation.started`` (made only for them).
        self._watching_starts = 0
        #: Calls, errors, durations and rate of every function called through here.
        self.stats = Stats()
        #: What daemon functions get to work with.
        self.services = Services(registry=self.registry, state=self.state,
                                 streams=self.streams, triggers=self.triggers,
                                 events=self.events, info=self.info,
                                 builtins=self.builtins, in_flight=self.invocations.__len__,
                                 record=self.record, clock=lambda: self.clock,
                                 queues=self.queues, channels=channels,
                                 stats=self.stats, watching=self.watchers.__len__,
                                 call=self._call_for_builtin,
                                 observers=self.observers.rows)
        self._event_seq = 0
        #: Wall time minus monotonic time, as last told by the driver (cron runs on UTC).
        self._wall_offset = 0.0
        self._now = 0.0

    def start(self, now: float, wall: float, stored: Stored | None = None) -> Output:
        """Set the clock and take in what the store held: state values, and the
        daemon-owned triggers (bound now)."""
        out: Output = []
        self.tick_clock(now, wall)
        if stored is not None:
            for scope, key, value in stored.state:
                self.state.set(scope, key, value)
            for stream_scope, item, value in stored.streams:
                self.streams.set(stream_scope, item, value)
            # Messages first: a stored queue trigger, once bound, adopts those that
            # waited for a consumer of its topic.
            self.queues.load(stored.messages)
            self.triggers.load(stored.triggers, self.clock, out)
        return out

    def persisted(self, persist: Persist, now: float) -> Output:
        """A :class:`Persist` effect came back from the store (committed, or with its
        ``failure``): finish what waited for it (answers, triggers it fires)."""
        out: Output = []
        self._now = now
        persist.then(persist.failure, out)
        self._pump_now(out)
        return out

    def _pump_now(self, out: Output) -> None:
        """Deliver what became deliverable, unless the driver paces the queues."""
        if self.queues.dirty and not self.paced_queues:
            self.queues.pump(out)

    def pump_queues(self, now: float, limit: int | None = None) -> Output:
        """Queue deliveries, ``limit`` at most (paced mode: the driver calls this while
        ``queues.dirty``)."""
        out: Output = []
        self._now = now
        self.queues.pump(out, limit)
        return out

    def tick_clock(self, now: float, wall: float) -> None:
        self._wall_offset = wall - now
        self._now = now

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

    # --- connection lifecycle -----------------------------------------------------------

    def connect(self, conn_id: int, transport: str, wall_time: float) -> Output:
        """A new connection: it gets its worker id and reattach token first."""
        conn = Connection(
            id=conn_id,
            worker_id=self.invocations.new_id(),
            reattach_token=secrets.token_hex(16),
            transport=transport,
            connected_at=datetime.fromtimestamp(wall_time, UTC).isoformat(timespec="seconds"),
            connected_at_ms=int(wall_time * 1000),
        )
        self.registry.add_connection(conn)
        return [(conn_id, p.WorkerRegistered(worker_id=conn.worker_id,
                                             reattach_token=conn.reattach_token,
                                             features=FEATURES))]

    def disconnect(self, conn_id: int) -> Output:
        """The connection is gone: drop what it owned and stop what it served."""
        out: Output = []
        conn = self.registry.remove_connection(conn_id)
        if conn is None:
            return out
        watcher = self.watchers.pop(conn_id, None)
        if watcher is not None and watcher.started:
            self._watching_starts -= 1
        if conn.is_worker:
            log.info("worker %s left (pid %s, %d functions)", worker_name(conn),
                     conn.info.get("pid", "?"), len(conn.functions))
            self.record("worker.left", out, worker_id=conn.worker_id,
                        name=conn.info.get("name"), functions=sorted(conn.functions))
        for invocation_id in conn.serving:
            inv = self.invocations.pop(invocation_id)
            if inv is not None and inv.caller != conn_id:
                self._answer(inv, None, _error(
                    ErrorCode.INVOCATION_STOPPED,
                    f"the worker serving '{inv.function_id}' disconnected",
                ), out)
        for invocation_id in conn.calling:
            inv = self.invocations.pop(invocation_id)
            if inv is not None:
                worker = self.registry.connections.get(inv.worker)
                if worker is not None:
                    worker.serving.discard(invocation_id)
        self.triggers.connection_closed(conn_id, out)
        self.observers.connection_closed(conn_id, out)
        if conn.functions:
            self.observers.targets_changed(conn.functions, out)
        self._pump_now(out)
        return out

    def shutdown(self) -> Output:
        """The daemon stops: everyone still waiting gets ``invocation_stopped``."""
        out: Output = []
        for inv in self.invocations.drain():
            if inv.caller is not None and inv.caller_invocation_id is not None:
                out.append((inv.caller, p.InvocationResult(
                    invocation_id=inv.caller_invocation_id,
                    function_id=inv.function_id,
                    error=_error(ErrorCode.INVOCATION_STOPPED, "the daemon is shutting down"),
                )))
        for conn in self.registry.connections.values():
            conn.serving.clear()
            conn.calling.clear()
        return out

    # --- input --------------------------------------------------------------------------

    def handle(self, conn_id: int, message: p.Message, now: float) -> Output:
        """Handle one decoded message from ``conn_id`` at monotonic time ``now``."""
        out: Output = []
        conn = self.registry.connections.get(conn_id)
        if conn is None:
            return out
        self._now = now
        handler = _HANDLERS.get(type(message))
        if handler is None:
            out.append((conn_id, p.Error(
                code=ErrorCode.BAD_FRAME,
                message=f"'{message.__struct_config__.tag}' is not a message a client may send",
            )))
        else:
            handler(self, conn, message, now, out)
        self._pump_now(out)  # a message became deliverable, or a slot came free
        return out

    def bad_frame(self, conn_id: int, frame: bytes, reason: str) -> Output:
        """A frame that did not decode. A call with an id still gets an invocationresult."""
        obj = p.loads_object(frame)
        if obj is not None and obj.get("type") == "invokefunction":
            invocation_id = obj.get("invocation_id")
            if isinstance(invocation_id, str):
                function_id = obj.get("function_id")
                return [(conn_id, p.InvocationResult(
                    invocation_id=invocation_id,
                    function_id=function_id if isinstance(function_id, str) else None,
                    error=_error(ErrorCode.BAD_FRAME, reason),
                ))]
        return [(conn_id, p.Error(code=ErrorCode.BAD_FRAME, message=reason))]

    def oversized_frame(self, conn_id: int, head: bytes, tail: bytes, size: int,
                        limit: int, now: float) -> Output:
        """A frame over ``limit`` was dropped unread (but for its ends): fail just the
        call it belonged to, and tell the sender; the connection stays."""
        out: Output = []
        self._now = now
        seen = oversized.peek(head, tail)
        reason = f"frame of {size} bytes is larger than the limit of {limit} bytes " \
                 f"(max_frame_bytes); dropped"
        conn = self.registry.connections.get(conn_id)
        inv = None if seen.invocation_id is None else self.invocations.get(seen.invocation_id)
        if seen.type == "invocationresult" and conn is not None and inv is not None \
                and inv.worker == conn_id:
            self._on_result(conn, p.InvocationResult(
                invocation_id=inv.id, function_id=inv.function_id,
                error=_error(ErrorCode.RESULT_TOO_LARGE,
                             f"the result of {inv.function_id} is {size} bytes, more than "
                             f"the daemon's frame limit of {limit} bytes (max_frame_bytes)")),
                now, out)
            self._pump_now(out)
        elif seen.type == "invokefunction" and seen.invocation_id is not None:
            out.append((conn_id, p.InvocationResult(
                invocation_id=seen.invocation_id,
                error=_error(ErrorCode.BAD_REQUEST, f"the call's {reason}"))))
            return out
        out.append((conn_id, p.Error(code=ErrorCode.BAD_FRAME, message=reason)))
        return out

    # --- time ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        due = [d for d in (self.invocations.next_deadline(), self.triggers.next_due(),
                           self.observers.next_expiry()) if d is not None]
        queued = self.queues.next_due()  # wall time: delayed messages and retries
        if queued is not None:
            due.append(queued - self._wall_offset)
        return min(due) if due else None

    def expire(self, now: float) -> Output:
        """Answer ``TIMEOUT`` to every call whose ``timeout_ms`` has run out, and fire the
        scheduled triggers that are due."""
        out: Output = []
        self._now = now
        self.triggers.fire_due(self.clock, out)
        self.observers.expire(now, out)
        if self.paced_queues:  # due retries and delays; the driver delivers them
            self.queues.release_due()
        else:
            self.queues.pump(out)
        for inv in self.invocations.pop_expired(now):
            worker = self.registry.connections.get(inv.worker)
            if worker is not None:
                worker.serving.discard(inv.id)
            self._answer(inv, None, _error(
                ErrorCode.TIMEOUT,
                f"invocation of '{inv.function_id}' timed out after {inv.timeout_ms} ms",
            ), out)
        return out

    # --- http ---------------------------------------------------------------------------

    def http_request(self, request: HttpRequest, now: float) -> Output:
        """An HTTP request for an ``http`` trigger: its function is called and the
        request answered with an :class:`HttpReply` (now, or when the call ends)."""
        out: Output = []
        self._now = now
        kind = self.triggers.types["http"]
        assert isinstance(kind, HttpType)
        found = kind.match(request.method, request.path)
        if not isinstance(found, Match):
            http_requests.no_route(request, found, out)
            return out
        match = found

        def answer(skipped: str | None, result: Any, error: p.ErrorBody | None,
                   out: Output) -> None:
            http_requests.reply(request, match, skipped, result, error, out)

        self.triggers.fire(match.binding, http_requests.payload(request, match), self.clock,
                           out, answer, http_requests.timeout_of(match))
        self._pump_now(out)
        return out

    # --- functions ----------------------------------------------------------------------

    def _on_register_function(self, conn: Connection, msg: p.RegisterFunction,
                              now: float, out: Output) -> None:
        function_id = msg.id
        problem = id_problem("function id", function_id)
        if problem:
            self._refused(conn, "function", function_id, problem, out)
            out.append((conn.id, p.Error(code=ErrorCode.BAD_REQUEST, message=problem,
                                         request_type="registerfunction",
                                         request_id=function_id)))
            return
        owner: str | None
        if function_id in self.builtins or function_id.startswith(RESERVED_PREFIX):
            owner = None
        else:
            existing = self.registry.functions.get(function_id)
            if existing is None or existing.owner == conn.id:
                invocation = None
                if msg.invocation is not None:
                    try:
                        invocation = http_functions.parse(msg.invocation,
                                                          self.http_allowed_env)
                    except http_functions.Refused as exc:
                        self._refused(conn, "function", function_id, str(exc), out)
                        out.append((conn.id, p.Error(
                            code=ErrorCode.BAD_REQUEST, message=str(exc),
                            request_type="registerfunction", request_id=function_id)))
                        return
                    if invocation.private:
                        log.info("function %r of worker %s is called at %s, a loopback "
                                 "or private address", function_id, worker_name(conn),
                                 invocation.url)
                self.registry.add_function(FunctionEntry(
                    id=function_id, owner=conn.id, description=msg.description,
                    request_format=msg.request_format, response_format=msg.response_format,
                    metadata=msg.metadata, invocation=invocation,
                ))
                self.queues.function_added(function_id)
                self.record("registration", out, what="function", id=function_id,
                            function_id=function_id, worker_id=conn.worker_id)
                self.observers.targets_changed((function_id,), out)
                return
            owner = self.registry.connections[existing.owner].worker_id
        message = (f"function '{function_id}' is reserved by the daemon" if owner is None
                   else f"function '{function_id}' is already served by worker {owner}")
        self._refused(conn, "function", function_id, message, out)
        out.append((conn.id, p.RegistrationRejected(
            code=ErrorCode.FUNCTION_NAMESPACE_CONFLICT, function_id=function_id,
            owner_worker_id=owner, message=message)))

    def _on_unregister_function(self, conn: Connection, msg: p.UnregisterFunction,
                                now: float, out: Output) -> None:
        if self.registry.remove_function(conn, msg.id):
            self.observers.targets_changed((msg.id,), out)

    def _on_register_action_type(self, conn: Connection, msg: p.RegisterActionType,
                                 now: float, out: Output) -> None:
        reason = id_problem("action type", msg.id) or id_problem("function id",
                                                                  msg.function_id)
        if msg.id in RESERVED_ACTIONS:
            reason = f"action type '{msg.id}' is reserved"
        existing = self.registry.actions.get(msg.id)
        if not reason and existing is not None and existing.owner != conn.id:
            owner = self.registry.connections[existing.owner].worker_id
            reason = f"action type '{msg.id}' is already provided by worker {owner}"
        if reason:
            self._refused(conn, "action type", msg.id, reason, out)
            out.append((conn.id, p.Error(code=ErrorCode.BAD_REQUEST, message=reason,
                                         request_type="registeractiontype",
                                         request_id=msg.id)))
            return
        self.registry.add_action(ActionType(id=msg.id, owner=conn.id,
                                            function_id=msg.function_id,
                                            description=msg.description))

    # --- calls --------------------------------------------------------------------------

    def _on_invoke(self, conn: Connection, msg: p.InvokeFunction, now: float,
                   out: Output) -> None:
        caller_id = msg.invocation_id
        if msg.timeout_ms is not None and not 0 < msg.timeout_ms <= MAX_TIMEOUT_MS:
            self._reject(conn, msg, ErrorCode.BAD_REQUEST,
                         f"timeout_ms must be a whole number from 1 to {MAX_TIMEOUT_MS}, "
                         f"got {msg.timeout_ms}", out)
            return
        action = msg.action
        void = False
        if action is not None:
            action_type = action.get("type")
            if action_type == "void":
                void = True
            elif action_type == "enqueue":
                self._enqueue(conn, msg, action, out)
                return
            elif not isinstance(action_type, str):
                self._reject(conn, msg, ErrorCode.BAD_REQUEST,
                             "action must be an object with a string 'type'", out)
                return
            else:
                self._call_action(conn, msg, action_type, now, out)
                return
        entry = self.registry.functions.get(msg.function_id)
        if entry is None:
            builtin = self.builtins.get(msg.function_id)
            if builtin is not None:
                self._call_builtin(conn, msg, builtin, void, out)
            elif caller_id is not None:
                self._reject(conn, msg, ErrorCode.FUNCTION_NOT_FOUND,
                             f"Function '{msg.function_id}' not found", out)
            return
        self._route(conn, msg, entry, void, now, out)

    def _route(self, conn: Connection | None, msg: p.InvokeFunction, entry: FunctionEntry,
               void: bool, now: float, out: Output, then: Continuation | None = None,
               source: str = "daemon", tags: dict[str, Any] | None = None) -> None:
        """Hand the call to the worker serving ``entry``; track it until answered."""
        invocations = self.invocations
        inv_id = invocations.new_id()
        caller_id = msg.invocation_id
        if conn is not None:
            self.calls_routed += 1
            source = "sdk" if conn.is_worker else "cli"
        worker = self.registry.connections[entry.owner]
        waits = conn is not None and caller_id is not None and not void
        # Every tracked call ends: its own timeout_ms, else the daemon's default.
        default = msg.timeout_ms is None
        timeout_ms = self.call_timeout_ms if msg.timeout_ms is None else msg.timeout_ms
        invocations.add(Invocation(
            id=inv_id,
            function_id=entry.id,
            worker=entry.owner,
            caller=conn.id if waits and conn is not None else None,
            caller_invocation_id=caller_id if waits else None,
            started=now,
            timeout_ms=timeout_ms,
            deadline=now + timeout_ms / 1000,
            then=then,
            source=source,
            action="void" if void else "sync",
            worker_id=worker.worker_id,
            payload=head(msg.data),
            tags=tags,
            observed=None if entry.id not in self.observers.by_source
            else observed(msg, conn, source, now + self._wall_offset),
        ), in_order=default)
        worker.serving.add(inv_id)
        if self._watching_starts:
            self.record("invocation.started", out, function_id=entry.id,
                        invocation_id=inv_id, worker_id=worker.worker_id, source=source,
                        action="void" if void else "sync", watchers_only=True)
        if waits and conn is not None:
            conn.calling.add(inv_id)
        if entry.invocation is not None:  # the daemon calls it over HTTP itself
            timeout = entry.invocation.timeout_ms or timeout_ms
            out.append((EVENTS, HttpCall(inv_id, entry.invocation, bytes(msg.data),
                                         min(timeout, timeout_ms))))
        else:
            out.append((entry.owner, p.InvokeFunction(
                function_id=entry.id, data=msg.data, invocation_id=inv_id,
                metadata=msg.metadata, traceparent=msg.traceparent, baggage=msg.baggage,
                # observe_depth travels on, so the calls the handler makes carry it back
                observe_depth=None if msg.observe_depth is None
                else depth_of(msg.observe_depth) or None,
                activation=msg.activation,
            )))
        if void and caller_id is not None and conn is not None:
            out.append((conn.id, p.InvocationResult(invocation_id=caller_id,
                                                    function_id=entry.id)))

    def _run_builtin(self, conn: Connection | None, builtin: BuiltinFunction, data: Raw,
                     out: Output, answer: Answer) -> None:
        run_builtin(self.services, builtin, CallContext(conn, p.from_raw(data), out,
                                                        self.clock), answer)

    def _call_builtin(self, conn: Connection, msg: p.InvokeFunction,
                      builtin: BuiltinFunction, void: bool, out: Output) -> None:
        caller_id = msg.invocation_id
        conn_id = conn.id

        def answer(result: Any, error: p.ErrorBody | None, out: Output) -> None:
            if caller_id is None:
                return
            if void:
                out.append((conn_id, p.InvocationResult(invocation_id=caller_id,
                                                        function_id=builtin.id)))
            else:
                out.append((conn_id, p.InvocationResult(
                    invocation_id=caller_id, function_id=builtin.id,
                    result=NULL if error is not None else p.to_raw(result), error=error,
                )))

        self._run_builtin(conn, builtin, msg.data, out,
                          answer if builtin.id not in self.observers.by_source
                          else self._observed_builtin(conn, msg, builtin.id, answer))

    def _observed_builtin(self, conn: Connection, msg: p.InvokeFunction, function_id: str,
                          answer: Answer) -> Answer:
        """``answer``, also handing the call to the observers of daemon function
        ``function_id`` (``state::set``, ``enqueue``, ...) once it is answered."""
        call = observed(msg, conn, "sdk" if conn.is_worker else "cli", self.clock.wall)
        started, invocation_id = self._now, self.invocations.new_id()

        def observed_answer(result: Any, error: p.ErrorBody | None, out: Output) -> None:
            answer(result, error, out)
            self.observers.finished(function_id, invocation_id, call,
                                    None if error is not None else p.to_raw(result), error,
                                    (self._now - started) * 1000.0, out)

        return observed_answer

    def call_internal(self, function_id: str, data: Raw, then: Continuation, clock: Clock,
                      out: Output, timeout_ms: int | None = None, source: str = "daemon",
                      tags: dict[str, Any] | None = None,
                      message: p.InvokeFunction | None = None) -> None:
        """A call the daemon makes itself (trigger targets, conditions, deliveries);
        ``then`` gets ``(result, error, out)`` once, whatever happens: answer, error,
        timeout, the worker leaving, or no such function. ``source`` and ``tags`` go
        into its ``invocation.finished`` event; ``message``, when given, is the call as
        the worker gets it (with metadata, activation, observe_depth)."""
        entry = self.registry.functions.get(function_id)
        if entry is not None:
            if message is None:
                message = p.InvokeFunction(function_id=function_id, data=data,
                                           timeout_ms=timeout_ms)
            self._route(None, message, entry, False, clock.now, out, then, source, tags)
            return
        builtin = self.builtins.get(function_id)
        if builtin is not None:
            self._run_builtin(None, builtin, data, out, lambda result, error, out: then(
                None if error else p.to_raw(result), error, out))
            return
        missing = _error(ErrorCode.FUNCTION_NOT_FOUND, f"Function '{function_id}' not found")
        self.record("invocation.finished", out, function_id=function_id, invocation_id=None,
                    worker_id=None, source=source, action="sync", status="error",
                    duration_ms=0.0, error=error_of(missing),
                    payload=preview(data), result=None, **(tags or {}))
        then(None, missing, out)

    def activate(self, target: str, observer_id: str, activation_id: str, payload: Raw,
                 metadata: Raw, depth: int, then: Continuation, out: Output) -> None:
        """An observer's activation: a call of its target with ``payload`` (JSON),
        answered like any call."""
        message = p.InvokeFunction(
            function_id=target, data=payload, metadata=metadata, observe_depth=depth,
            activation={"observer_id": observer_id, "activation_id": activation_id})
        self.call_internal(target, payload, then, self.clock, out,
                           source=f"observe:{observer_id}", message=message)

    def _call_for_builtin(self, function_id: str, data: Any, then: Answer,
                          out: Output) -> None:
        """A call a daemon function makes (a custom stream backend's op): ``then`` gets
        the decoded result."""
        self.call_internal(function_id, p.to_raw(data), lambda result, error, out: then(
            None if result is None else p.from_raw(result), error, out), self.clock, out)

    def _enqueue(self, conn: Connection, msg: p.InvokeFunction, action: dict[str, Any],
                 out: Output) -> None:
        """A call through a named durable queue: the receipt once the message is on disk."""
        queue = action.get("queue")
        if not isinstance(queue, str) or not queue:
            problem: str | None = "action.queue must be a non-empty string"
        else:
            problem = id_problem("queue", queue) or id_problem("function id",
                                                               msg.function_id)
        if problem or not isinstance(queue, str):
            self._reject(conn, msg, ErrorCode.BAD_REQUEST, problem or "", out)
            return
        caller_id, conn_id, function_id = msg.invocation_id, conn.id, msg.function_id
        receipt = ""  # set below, read once the message is on disk

        def kept(failure: str | None, out: Output) -> None:
            if caller_id is None:
                return
            out.append((conn_id, p.InvocationResult(
                invocation_id=caller_id, function_id=function_id,
                result=NULL if failure else p.to_raw({
                    "messageReceiptId": receipt,
                    # extension: whether anyone serves the function now (else it waits)
                    "function_served": self.serves(function_id)}),
                error=_error(ErrorCode.QUEUE_ERROR, f"not enqueued: {failure}")
                if failure else None)))

        receipt = self.queues.enqueue(queue, function_id, msg.data, out, kept).id

    def _call_action(self, conn: Connection, msg: p.InvokeFunction, action_type: str,
                     now: float, out: Output) -> None:
        """A worker-provided action: a synchronous call of the provider's function."""
        provider = self.registry.actions.get(action_type)
        if provider is None:
            self._reject(conn, msg, ErrorCode.ACTION_NOT_FOUND,
                         f"action type '{action_type}' is not provided by any worker", out)
            return
        wrapped = p.InvokeFunction(
            function_id=provider.function_id,
            data=p.to_raw({
                "function_id": msg.function_id,
                "payload": p.from_raw(msg.data),
                "action": msg.action,
                "caller": {"worker_id": conn.worker_id},
            }),
            invocation_id=msg.invocation_id,
            timeout_ms=msg.timeout_ms,
            metadata=msg.metadata,
            traceparent=msg.traceparent,
            baggage=msg.baggage,
        )
        self._on_invoke(conn, wrapped, now, out)

    def _reject(self, conn: Connection, msg: p.InvokeFunction, code: str, message: str,
                out: Output) -> None:
        """Answer a call with an error, if the caller asked for an answer at all."""
        if msg.invocation_id is not None:
            out.append((conn.id, p.InvocationResult(
                invocation_id=msg.invocation_id, function_id=msg.function_id,
                error=_error(code, message),
            )))

    def _on_result(self, conn: Connection, msg: p.InvocationResult, now: float,
                   out: Output) -> None:
        inv = self.invocations.get(msg.invocation_id)
        if inv is None or inv.worker != conn.id:
            return  # late (timed out, caller gone) or not this worker's to answer
        self.invocations.pop(msg.invocation_id)
        conn.serving.discard(inv.id)
        error = None if msg.error is None else _valid_error(msg.error)
        self._finished(inv, msg.result, error, out)
        if inv.caller is None and inv.then is None:
            return
        self._answer(inv, msg.result if error is None else None, error, out, msg)

    def http_answered(self, invocation_id: str, result: bytes | None,
                      error: dict[str, str] | None, now: float) -> Output:
        """An HTTP-invoked function answered (``result``: its JSON), or failed: handled
        as the answer of the connection that registered it."""
        out: Output = []
        self._now = now
        inv = self.invocations.get(invocation_id)
        worker = None if inv is None else self.registry.connections.get(inv.worker)
        if inv is None or worker is None:
            return out  # timed out, or its worker left, meanwhile
        self._on_result(worker, p.InvocationResult(
            invocation_id=invocation_id, function_id=inv.function_id,
            result=NULL if result is None else Raw(result), error=error), now, out)
        self._pump_now(out)
        return out

    def _finished(self, inv: Invocation, result: Any, error: Any, out: Output) -> None:
        """Stats and the ``invocation.finished`` event of a routed call, however it
        ended (answered, timed out, its worker gone). The event is kept as its parts and
        made into a dict only when someone reads it (a watcher now, or the history
        later): most never are, and this runs for every call."""
        now = self._now
        duration_ms = (now - inv.started) * 1000.0
        self.stats.add(inv.function_id, duration_ms, error, now)
        self._event_seq += 1
        finished = Finished(self._event_seq, now + self._wall_offset, inv, result, error,
                            duration_ms)
        self.events.append(finished)
        if self.watchers:  # made into a dict by whoever sends it (the driver, later)
            out.append((EVENTS, Emit(finished)))
        if inv.observed is not None:
            self.observers.finished(inv.function_id, inv.id, inv.observed, result,
                                    None if error is None else p.error_body(error),
                                    duration_ms, out)

    def _answer(self, inv: Invocation, result: Any, error: Any, out: Output,
                source: p.InvocationResult | None = None) -> None:
        if source is None:  # ended without an answer: timed out, or its worker left
            self._finished(inv, None, error, out)
        if inv.then is not None:
            inv.then(result, None if error is None else p.error_body(error), out)
            return
        if inv.caller is None or inv.caller_invocation_id is None:
            return
        caller = self.registry.connections.get(inv.caller)
        if caller is None:
            return
        caller.calling.discard(inv.id)
        out.append((inv.caller, p.InvocationResult(
            invocation_id=inv.caller_invocation_id,
            function_id=inv.function_id,
            result=NULL if result is None else result,
            error=error,
            traceparent=source.traceparent if source is not None else None,
            baggage=source.baggage if source is not None else None,
        )))

    # --- session ------------------------------------------------------------------------

    def _on_ping(self, conn: Connection, msg: p.Ping, now: float, out: Output) -> None:
        out.append((conn.id, p.Pong()))

    def _on_reattach(self, conn: Connection, msg: p.Reattach, now: float,
                     out: Output) -> None:
        """Retire the previous connection of a reconnecting worker, if the token proves it."""
        previous = self.registry.by_worker_id.get(msg.previous_worker_id)
        if previous is None or previous.id == conn.id or msg.reattach_token is None:
            return
        if not hmac.compare_digest(previous.reattach_token, msg.reattach_token):
            return
        self.observers.reattached(previous.id, conn)
        out.extend(self.disconnect(previous.id))
        out.append((previous.id, Close("replaced by a reattaching connection")))

    # --- triggers -----------------------------------------------------------------------

    def _on_register_trigger(self, conn: Connection, msg: p.RegisterTrigger, now: float,
                             out: Output) -> None:
        try:
            binding = self.triggers.register(conn.id, msg.id, msg.trigger_type,
                                             msg.function_id, msg.config, msg.metadata,
                                             self.clock, out)
        except TriggerError as exc:
            self._refused(conn, "trigger", msg.id, str(exc), out)
            out.append((conn.id, p.TriggerRegistrationResult(
                id=msg.id, trigger_type=msg.trigger_type, function_id=msg.function_id,
                error=_error(ErrorCode.TRIGGER_REGISTRATION_FAILED, str(exc)))))
            return
        kind = self.triggers.types.get(binding.trigger_type)
        if kind is not None and kind.owner is None:  # built-in: bound already
            out.append((conn.id, p.TriggerRegistrationResult(
                id=msg.id, trigger_type=msg.trigger_type, function_id=msg.function_id)))

    def _on_unregister_trigger(self, conn: Connection, msg: p.UnregisterTrigger, now: float,
                               out: Output) -> None:
        self.triggers.unregister(msg.id, conn.id, out)

    def _on_register_trigger_type(self, conn: Connection, msg: p.RegisterTriggerType,
                                  now: float, out: Output) -> None:
        try:
            self.triggers.add_type(conn.id, msg, self.clock, out)
        except TriggerError as exc:
            self._refused(conn, "trigger type", msg.id, str(exc), out)
            out.append((conn.id, p.Error(code=ErrorCode.BAD_REQUEST, message=str(exc),
                                         request_type="registertriggertype",
                                         request_id=msg.id)))

    def _on_unregister_trigger_type(self, conn: Connection, msg: p.UnregisterTriggerType,
                                    now: float, out: Output) -> None:
        self.triggers.remove_type(conn.id, msg.id)

    def _on_trigger_result(self, conn: Connection, msg: p.TriggerRegistrationResult,
                           now: float, out: Output) -> None:
        self.triggers.provider_answered(conn.id, msg, out)

    # --- observers ------------------------------------------------------------------------

    def _on_observe(self, conn: Connection, msg: p.Observe, now: float, out: Output) -> None:
        self.observers.observe(conn, msg, p.encode(msg), out)

    def _on_unobserve(self, conn: Connection, msg: p.Unobserve, now: float,
                      out: Output) -> None:
        self.observers.unobserve(conn, msg.id, out)

    # --- watching -------------------------------------------------------------------------

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


_HANDLERS: dict[type, _Handler] = {
    p.InvokeFunction: Router._on_invoke,
    p.InvocationResult: Router._on_result,
    p.RegisterFunction: Router._on_register_function,
    p.UnregisterFunction: Router._on_unregister_function,
    p.RegisterActionType: Router._on_register_action_type,
    p.Ping: Router._on_ping,
    p.Reattach: Router._on_reattach,
    p.RegisterTrigger: Router._on_register_trigger,
    p.UnregisterTrigger: Router._on_unregister_trigger,
    p.RegisterTriggerType: Router._on_register_trigger_type,
    p.UnregisterTriggerType: Router._on_unregister_trigger_type,
    p.TriggerRegistrationResult: Router._on_trigger_result,
    p.Watch: Router._on_watch,
    p.Observe: Router._on_observe,
    p.Unobserve: Router._on_unobserve,
}
