"""Registrations: functions, action types, triggers and trigger types, each owned by
the connection that registered it."""

from __future__ import annotations

from iii_daemon.core import http_functions
from iii_daemon.core.effects import Output
from iii_daemon.core.errors import TriggerError
from iii_daemon.core.observer_owners import descriptor_of
from iii_daemon.core.registry import ActionType, Connection, FunctionEntry
from iii_daemon.core.router_state import (
    RESERVED_ACTIONS,
    RESERVED_PREFIX,
    RouterState,
    log,
    make_error,
    worker_name,
)
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode
from iii_sdk.names import id_problem


class Registrations(RouterState):
    """``register*`` / ``unregister*`` and providers' verdicts."""

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
                try:
                    descriptor = descriptor_of(msg.observe)
                except ValueError as exc:
                    self._refused(conn, "function", function_id, str(exc), out)
                    out.append((conn.id, p.Error(
                        code=ErrorCode.BAD_REQUEST, message=str(exc),
                        request_type="registerfunction", request_id=function_id)))
                    return
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
                entry = FunctionEntry(
                    id=function_id, owner=conn.id, description=msg.description,
                    request_format=msg.request_format, response_format=msg.response_format,
                    metadata=msg.metadata, invocation=invocation, observe=descriptor,
                    revision=existing.revision if existing is not None else 0)
                self.registry.add_function(entry)
                self.queues.function_added(function_id)
                self.record("registration", out, what="function", id=function_id,
                            function_id=function_id, worker_id=conn.worker_id)
                self.observers.targets_changed((function_id,), out)
                self.observer_owners.registered(conn, entry, out)
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
            self.observer_owners.source_gone(msg.id, out)

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
                error=make_error(ErrorCode.TRIGGER_REGISTRATION_FAILED, str(exc)))))
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
