"""The router's side of RBAC listeners: a connection's rights come from the auth
function (:meth:`Gatekeeping.authenticate`), and every message from such a connection
passes :meth:`Gatekeeping._admitted` before its handler runs. One place decides, so no
route (a call, void, enqueue, an action, a trigger, a condition, an observer) goes
around it.

What it registers gets its ``function_registration_prefix``: callers use the prefixed
id, the worker keeps its own names (the call it gets carries the name it registered).
"""

from __future__ import annotations

from typing import Any

from iii_daemon.core.calls import Calls
from iii_daemon.core.effects import EVENTS, Authenticated, Output
from iii_daemon.core.rbac import AuthRefused, Grants, grants_of
from iii_daemon.core.registry import Connection
from iii_daemon.core.router_state import make_error
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode


class Gatekeeping(Calls):
    def authenticate(self, request_id: int, function_id: str, auth_input: dict[str, Any],
                     expose: tuple[Any, ...], now: float) -> Output:
        """Call the listener's auth function with ``auth_input`` (the upstream
        ``AuthInput``); the driver gets :class:`Authenticated` with the grants, or why
        the connection is refused (the function raised, is missing, answered nonsense)."""
        out: Output = []
        self._now = now

        def decided(result: Any, error: p.ErrorBody | None, out: Output) -> None:
            if error is not None:
                out.append((EVENTS, Authenticated(request_id, None,
                                                  f"{function_id}: {error.message}")))
                return
            try:
                grants = grants_of(p.from_raw(result or p.NULL), expose)
            except AuthRefused as exc:
                out.append((EVENTS, Authenticated(request_id, None, f"{function_id}: {exc}")))
                return
            out.append((EVENTS, Authenticated(request_id, grants, None)))

        self.call_internal(function_id, p.to_raw(auth_input), decided, self.clock, out,
                           source="auth")
        return out

    def _admitted(self, conn: Connection, grants: Grants, message: p.Message,
                  out: Output) -> bool:
        """Whether ``message`` from an RBAC connection may go on (its ids made the
        prefixed ones); if not, it is answered ``FORBIDDEN`` here."""
        if isinstance(message, p.InvokeFunction):
            message.function_id = self._own(conn, grants, message.function_id)
            refusal = self._refusal(conn, grants, message.function_id)
            if refusal is not None:
                self._reject(conn, message, ErrorCode.FORBIDDEN, refusal, out)
                return False
            return True
        if isinstance(message, p.RegisterFunction):
            if not grants.allow_function_registration:
                self._forbid(conn, "registerfunction", message.id,
                             "this worker may not register functions", out)
                return False
            registered = grants.registered_as(message.id)
            grants.own_names[registered] = message.id
            message.id = registered
            return True
        if isinstance(message, p.UnregisterFunction):
            message.id = self._own(conn, grants, message.id)
            return True
        if isinstance(message, p.RegisterTrigger):
            return self._trigger_admitted(conn, grants, message, out)
        if isinstance(message, p.RegisterTriggerType):
            if not grants.allow_trigger_type_registration:
                self._forbid(conn, "registertriggertype", message.id,
                             "this worker may not register trigger types "
                             "(allow_trigger_type_registration)", out)
                return False
            return True
        if isinstance(message, p.RegisterActionType):
            message.function_id = self._own(conn, grants, message.function_id)
            refusal = self._refusal(conn, grants, message.function_id)
            if refusal is not None:
                self._forbid(conn, "registeractiontype", message.id, refusal, out)
                return False
            return True
        if isinstance(message, p.Observe):
            for end in (message.source, message.target):
                end.function_id = self._own(conn, grants, end.function_id)
                refusal = self._refusal(conn, grants, end.function_id)
                if refusal is not None:
                    out.append((conn.id, p.ObserveResult(id=message.id, state="error",
                                                         error=make_error("FORBIDDEN",
                                                                          refusal))))
                    return False
            return True
        return True

    def _trigger_admitted(self, conn: Connection, grants: Grants, msg: p.RegisterTrigger,
                          out: Output) -> bool:
        """A trigger it binds calls its target (and condition) as the daemon: both must
        be functions it may call, and the type one it may bind."""
        allowed_types = grants.allowed_trigger_types
        refusal = None
        if allowed_types is not None and msg.trigger_type not in allowed_types:
            refusal = f"trigger type '{msg.trigger_type}' is not allowed for this worker " \
                      f"(allowed_trigger_types)"
        msg.function_id = self._own(conn, grants, msg.function_id)
        condition = msg.config.get("condition_function_id") if isinstance(
            msg.config, dict) else None
        if isinstance(condition, str):
            msg.config = {**msg.config,
                          "condition_function_id": self._own(conn, grants, condition)}
        for target in (msg.function_id, msg.config.get("condition_function_id")):
            if refusal is None and isinstance(target, str):
                refusal = self._refusal(conn, grants, target)
        if refusal is None:
            return True
        out.append((conn.id, p.TriggerRegistrationResult(
            id=msg.id, trigger_type=msg.trigger_type, function_id=msg.function_id,
            error=make_error(ErrorCode.FORBIDDEN, refusal))))
        return False

    def _own(self, conn: Connection, grants: Grants, function_id: str) -> str:
        """``function_id`` as the daemon knows it: a name the worker registered becomes
        its prefixed id."""
        prefixed = grants.registered_as(function_id)
        return prefixed if prefixed in conn.functions else function_id

    def _refusal(self, conn: Connection, grants: Grants, function_id: str) -> str | None:
        entry = self.registry.functions.get(function_id)
        rule = grants.refusal(function_id, entry.metadata if entry is not None else None,
                              own=function_id in conn.functions)
        if rule is None:
            return None
        return f"function '{function_id}' may not be called by this worker ({rule})"

    def _forbid(self, conn: Connection, request_type: str, request_id: str, reason: str,
                out: Output) -> None:
        out.append((conn.id, p.Error(code=ErrorCode.FORBIDDEN, message=reason,
                                     request_type=request_type, request_id=request_id)))
