"""Calls and their results (``invokefunction``, ``invocationresult``): routing to the
worker that serves a function, the daemon's own functions, void, enqueue and worker-provided
actions, and answering each caller once."""

from __future__ import annotations

from typing import Any

from msgspec import Raw

from iii_daemon.core.builtin import Answer, BuiltinFunction, CallContext, run_builtin
from iii_daemon.core.effects import EVENTS, Emit, HttpCall, Output
from iii_daemon.core.event_log import Finished, error_of, head, preview
from iii_daemon.core.invocations import Continuation, Invocation
from iii_daemon.core.observers import caller_of, depth_of, observed
from iii_daemon.core.registry import Connection, FunctionEntry
from iii_daemon.core.router_state import RouterState, make_error, valid_error
from iii_daemon.core.triggers.base import Clock
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode
from iii_sdk.limits import MAX_TIMEOUT_MS
from iii_sdk.names import id_problem
from iii_sdk.protocol import NULL

#: The source of the calls of RBAC listeners' auth functions (core/gatekeeping.py).
AUTH_SOURCE = "auth"


class Results(RouterState):
    """How a routed call ends: its result, error or timeout goes to whoever waits."""

    def _on_result(self, conn: Connection, msg: p.InvocationResult, now: float,
                   out: Output) -> None:
        inv = self.invocations.get(msg.invocation_id)
        if inv is None or inv.worker != conn.id:
            return  # late (timed out, caller gone) or not this worker's to answer
        self.invocations.pop(msg.invocation_id)
        conn.serving.discard(inv.id)
        error = None if msg.error is None else valid_error(msg.error)
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


class Calls(Results):
    """Routing ``invokefunction`` by its action, and the calls the daemon makes itself."""

    def _on_invoke(self, conn: Connection, msg: p.InvokeFunction, now: float,
                   out: Output) -> None:
        caller_id = msg.invocation_id
        if msg.activation is not None and not self.observer_owners.owner_call(conn, msg, out):
            return  # an owner's obs.call it may not make (answered)
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
            # An auth function's input is a handshake's headers, credentials with them:
            # never kept for events, watchers or the TUI.
            payload=b"" if source == AUTH_SOURCE else head(msg.data),
            tags=tags,
            observed=None if entry.id not in self.observers.by_source
            else observed(msg, conn, source, now + self._wall_offset),
        ))
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
            # A worker whose ids got a prefix gets calls by the names it registered.
            named = entry.id if worker.grants is None else worker.grants.own_name(entry.id)
            out.append((entry.owner, p.InvokeFunction(
                function_id=named, data=msg.data, invocation_id=inv_id,
                metadata=msg.metadata, traceparent=msg.traceparent, baggage=msg.baggage,
                # observe_depth travels on, so the calls the handler makes carry it back
                observe_depth=None if msg.observe_depth is None
                else depth_of(msg.observe_depth) or None,
                activation=msg.activation,
                # Who called (current_invocation().caller): the worker stamped here,
                # the function and invocation as its SDK asserts them.
                caller=None if conn is None else caller_of(conn, msg.caller),
            )))
        if void and caller_id is not None and conn is not None:
            out.append((conn.id, p.InvocationResult(invocation_id=caller_id,
                                                    function_id=entry.id)))

    def _run_builtin(self, conn: Connection | None, builtin: BuiltinFunction, data: Raw,
                     out: Output, answer: Answer, depth: int = 0) -> None:
        run_builtin(self.services, builtin, CallContext(conn, p.from_raw(data), out,
                                                        self.clock, depth=depth), answer)

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
                          else self._observed_builtin(conn, msg, builtin.id, answer),
                          0 if msg.observe_depth is None else depth_of(msg.observe_depth))

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
                      message: p.InvokeFunction | None = None, depth: int = 0) -> None:
        """A call the daemon makes itself (trigger targets, conditions, deliveries);
        ``then`` gets ``(result, error, out)`` once, whatever happens: answer, error,
        timeout, the worker leaving, or no such function. ``source`` and ``tags`` go
        into its ``invocation.finished`` event; ``message``, when given, is the call as
        the worker gets it (with metadata, activation, observe_depth); ``depth``, the
        observe hops that led to it (a trigger fired by a write of an activation)."""
        entry = self.registry.functions.get(function_id)
        if entry is not None:
            if message is None:
                message = p.InvokeFunction(function_id=function_id, data=data,
                                           timeout_ms=timeout_ms,
                                           observe_depth=depth or None)
            self._route(None, message, entry, False, clock.now, out, then, source, tags)
            return
        builtin = self.builtins.get(function_id)
        if builtin is not None:
            self._run_builtin(None, builtin, data, out, lambda result, error, out: then(
                None if error else p.to_raw(result), error, out), depth)
            return
        missing = make_error(ErrorCode.FUNCTION_NOT_FOUND, f"Function '{function_id}' not found")
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
                    "function_served": self.queues.served(function_id)}),
                error=make_error(self._enqueue_failure, f"not enqueued: {failure}")
                if failure else None)))

        receipt = self.queues.enqueue(queue, function_id, msg.data, out, kept).id

    @property
    def _enqueue_failure(self) -> str:
        """The error of an enqueue nothing kept: the shared backend is away, or the disk
        failed."""
        return ErrorCode.QUEUE_ERROR if self.shared is None else ErrorCode.BACKEND_UNAVAILABLE

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
                error=make_error(code, message),
            )))
