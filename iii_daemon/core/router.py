"""The sans-I/O core: messages in, messages out.

The router knows nothing of sockets, event loops or JSON text. A driver feeds it decoded
messages with :meth:`Router.handle` (and connects, disconnects, bad frames, clock ticks)
and writes out what each call returns: a list of ``(connection id, message)`` pairs,
where the message may also be a :class:`Close` command for the driver. Time comes in as
an argument; :meth:`Router.next_deadline` says when the driver must call
:meth:`Router.expire`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iii_daemon.core import http_requests, oversized
from iii_daemon.core.builtin import BuiltinFunction, ChannelMaker, Services
from iii_daemon.core.calls import Calls
from iii_daemon.core.effects import Output, Persist
from iii_daemon.core.event_log import EventLog
from iii_daemon.core.gatekeeping import Gatekeeping
from iii_daemon.core.http_requests import HttpRequest
from iii_daemon.core.invocations import InvocationTable
from iii_daemon.core.observer_owners import ObserverOwners
from iii_daemon.core.observers import Observers
from iii_daemon.core.processes import Processes
from iii_daemon.core.queues import Queues
from iii_daemon.core.registrations import Registrations
from iii_daemon.core.registry import Connection, Registry
from iii_daemon.core.router_state import make_error
from iii_daemon.core.sessions import Sessions
from iii_daemon.core.shared import SharedOps
from iii_daemon.core.shared_events import SharedEvents
from iii_daemon.core.shared_queues import SharedQueues
from iii_daemon.core.state_table import StateTable
from iii_daemon.core.stats import Stats
from iii_daemon.core.stream_clients import StreamClients
from iii_daemon.core.stream_joining import StreamJoining
from iii_daemon.core.supervision import Supervisor
from iii_daemon.core.triggers.http import HttpType, Match
from iii_daemon.core.triggers.manager import TriggerManager
from iii_daemon.core.watchers import Watcher
from iii_daemon.core.watching import Watching
from iii_daemon.core.writes import Stored
from iii_daemon.functions import engine as engine_functions
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode

_Handler = Callable[["Router", Connection, Any, float, Output], None]


class Router(Gatekeeping, StreamJoining, Calls, Sessions, Registrations, Watching, Processes,
             SharedEvents):
    """Registry, routing and invocation tracking for every connection: the state and the
    entry points; the handlers of each message family live in their own modules."""

    def __init__(self, builtins: dict[str, BuiltinFunction] | None = None,
                 info: dict[str, Any] | None = None, history: int = 10_000,
                 call_timeout_ms: int = 300_000,
                 queues: dict[str, dict[str, Any]] | None = None,
                 paced_queues: bool = False, channels: ChannelMaker | None = None,
                 http_allowed_env: frozenset[str] = frozenset(),
                 shared: SharedOps | None = None, state_backend: str | None = None,
                 streams_backend: str | None = None) -> None:
        #: Static facts about this daemon (pid, socket, listeners, ...) for engine::status.
        self.info: dict[str, Any] = info or {}
        self.registry = Registry()
        self.invocations = InvocationTable()
        #: The deadline of calls that set no timeout_ms: nothing is tracked forever.
        self.call_timeout_ms = call_timeout_ms
        self.builtins: dict[str, BuiltinFunction] = dict(
            engine_functions.BUILTINS if builtins is None else builtins
        )
        # Where state values and stream items live: unset follows the daemon (Redis when
        # it shares one). On a bridge, the bridged engine serves state::* / stream::*:
        # the daemon's own are not there to answer them (the bridge registers its own).
        state_backend = state_backend or ("redis" if shared else "local")
        streams_backend = streams_backend or ("redis" if shared else "local")
        for prefix, backend in (("state::", state_backend), ("stream::", streams_backend)):
            if backend == "bridge":
                for function_id in [f for f in self.builtins if f.startswith(prefix)]:
                    del self.builtins[function_id]
        self.state: StateTable[str] = StateTable()
        self.streams: StateTable[tuple[str, str]] = StateTable()
        self.triggers = TriggerManager(self)
        #: Stream-socket clients and what they joined; they hear every stream event.
        self.stream_clients = StreamClients()
        self.triggers.listeners["stream"] = self._stream_heard
        #: Durable queues (config ``[queues.NAME]`` tables by name).
        self.queues = Queues(self, queues, call_timeout_ms) if shared is None else \
            SharedQueues(self, shared, queues, call_timeout_ms)
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
        #: What the owners of observed functions are told and may do (observe.v1).
        self.observer_owners = ObserverOwners(self.registry, self.observers, self.stats)
        #: Managed workers: the processes the daemon runs for the user.
        self.supervisor = Supervisor()
        #: The backend several daemons share (pub/sub through Redis), if any.
        self.shared = shared
        if shared is not None:  # a cron tick fires once among the daemons sharing it
            self.triggers.claim = self.claim
        #: What daemon functions get to work with.
        self.services = Services(registry=self.registry, state=self.state,
                                 streams=self.streams, triggers=self.triggers,
                                 events=self.events, info=self.info,
                                 builtins=self.builtins, in_flight=self.invocations.__len__,
                                 record=self.record, clock=lambda: self.clock,
                                 queues=self.queues, channels=channels,
                                 stats=self.stats, watching=self.watchers.__len__,
                                 call=self._call_for_builtin,
                                 observers=self.observers.rows,
                                 observe_declared=lambda conn, out:
                                 self.observer_owners.declared(conn, out),
                                 stream_clients=lambda: (len(self.stream_clients),
                                                         self.stream_clients.subscriptions()),
                                 supervisor=self.supervisor, shared=shared,
                                 shared_state=shared if state_backend == "redis" else None,
                                 shared_streams=shared if streams_backend == "redis" else None)
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
            for scope, key, text in stored.state:
                self.state.set_json(scope, key, text)
            for stream_scope, item, text in stored.streams:
                self.streams.set_json(stream_scope, item, text)
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

    def pump_queues(self, now: float, limit: int | None = None) -> Output:
        """Queue deliveries, ``limit`` at most (paced mode: the driver calls this while
        ``queues.dirty``)."""
        out: Output = []
        self._now = now
        self.queues.pump(out, limit)
        return out

    def handle(self, conn_id: int, message: p.Message, now: float) -> Output:
        """Handle one decoded message from ``conn_id`` at monotonic time ``now``."""
        out: Output = []
        conn = self.registry.connections.get(conn_id)
        if conn is None:
            return out
        self._now = now
        handler = _HANDLERS.get(type(message))
        grants = conn.grants
        if grants is not None and not self._admitted(conn, grants, message, out):
            return out  # an RBAC connection asked for what it may not have
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
                    error=make_error(ErrorCode.BAD_FRAME, reason),
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
                error=make_error(ErrorCode.RESULT_TOO_LARGE,
                             f"the result of {inv.function_id} is {size} bytes, more than "
                             f"the daemon's frame limit of {limit} bytes (max_frame_bytes)")),
                now, out)
            self._pump_now(out)
        elif seen.type == "invokefunction" and seen.invocation_id is not None:
            out.append((conn_id, p.InvocationResult(
                invocation_id=seen.invocation_id,
                error=make_error(ErrorCode.BAD_REQUEST, f"the call's {reason}"))))
            return out
        out.append((conn_id, p.Error(code=ErrorCode.BAD_FRAME, message=reason)))
        return out

    def next_deadline(self) -> float | None:
        due = [d for d in (self.invocations.next_deadline(), self.triggers.next_due(),
                           self.observers.next_expiry(), self.supervisor.next_due())
               if d is not None]
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
        self.supervisor.due(now, out)
        self.queues.tick(out)
        if self.paced_queues:  # due retries and delays; the driver delivers them
            self.queues.release_due()
        else:
            self.queues.pump(out)
        for inv in self.invocations.pop_expired(now):
            worker = self.registry.connections.get(inv.worker)
            if worker is not None:
                worker.serving.discard(inv.id)
            self._answer(inv, None, make_error(
                ErrorCode.TIMEOUT,
                f"invocation of '{inv.function_id}' timed out after {inv.timeout_ms} ms",
            ), out)
        return out

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

        payload = http_requests.payload(request, match)

        def fire(out: Output) -> None:
            self.triggers.fire(match.binding, payload, self.clock, out, answer,
                               http_requests.timeout_of(match))

        http_requests.through_middleware(
            list(match.binding.config.get("middleware_function_ids") or ()), payload,
            lambda function_id, data, then, out: self.call_internal(
                function_id, p.to_raw(data), then, self.clock, out, source="http middleware"),
            fire, lambda result, error, out: answer(None, result, error, out), out)
        self._pump_now(out)
        return out


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
    p.ObserverAck: Router._on_observer_ack,
    p.InvocationsObserved: Router._on_invocations_observed,
    p.LocalInvocationStats: Router._on_local_invocation_stats,
}
