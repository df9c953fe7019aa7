"""The router's side of RBAC listeners: a connection's rights come from the auth
function (:meth:`Gatekeeping.authenticate`), and every message from such a connection
passes :meth:`Gatekeeping._admitted` before its handler runs. One place decides, so no
route (a call, void, enqueue, an action, a trigger, a condition, an observer) goes
around it.

What it registers gets its ``function_registration_prefix``: callers use the prefixed
id, the worker keeps its own names (the call it gets carries the name it registered).
Its listener's registration hooks see each registration first (and may deny or rewrite
it); its middleware runs instead of each call the worker makes, with the auth
``context``, and answers for it (it makes the call itself to let it through).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iii_daemon.core.calls import AUTH_SOURCE, Calls
from iii_daemon.core.effects import EVENTS, Authenticated, Output
from iii_daemon.core.rbac import ALWAYS, AuthRefused, Grants
from iii_daemon.core.registry import Connection
from iii_daemon.core.router_state import make_error
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode

Registration = p.RegisterFunction | p.RegisterTrigger | p.RegisterTriggerType


class Gatekeeping(Calls):
    def authenticate(self, request_id: int, function_id: str, auth_input: dict[str, Any],
                     judge: Callable[[Any], Any], now: float) -> Output:
        """Call the auth function ``function_id`` with ``auth_input`` (the upstream
        ``AuthInput``); the driver gets :class:`Authenticated` with what ``judge`` makes of
        its answer (an RBAC listener's grants, a stream client's context), or why the
        connection is refused: the function raised, is missing, or ``judge`` raised
        :class:`AuthRefused` (an answer of the wrong shape)."""
        out: Output = []
        self._now = now

        def decided(result: Any, error: p.ErrorBody | None, out: Output) -> None:
            if error is not None:
                out.append((EVENTS, Authenticated(request_id, None,
                                                  f"{function_id}: {error.message}")))
                return
            try:
                verdict = judge(p.from_raw(result or p.NULL))
            except AuthRefused as exc:
                out.append((EVENTS, Authenticated(request_id, None, f"{function_id}: {exc}")))
                return
            out.append((EVENTS, Authenticated(request_id, verdict, None)))

        self.call_internal(function_id, p.to_raw(auth_input), decided, self.clock, out,
                           source=AUTH_SOURCE)
        return out

    def _admitted(self, conn: Connection, grants: Grants, message: p.Message,
                  out: Output) -> bool:
        """Whether ``message`` from an RBAC connection goes on to its handler now (its
        ids made the prefixed ones). If not, it was answered ``FORBIDDEN`` here, or it
        waits for a registration hook, which hands it on."""
        if isinstance(message, p.InvokeFunction):
            return self._call_admitted(conn, grants, message, out)
        if isinstance(message, p.RegisterFunction):
            if not grants.allow_function_registration:
                self._forbid(conn, "registerfunction", message.id,
                             "this worker may not register functions", out)
                return False
            registered = grants.registered_as(message.id)
            grants.own_names[registered] = message.id
            message.id = registered
            return self._hooked(conn, grants, "function", message, out)
        if isinstance(message, p.UnregisterFunction):
            message.id = self._own(conn, grants, message.id)
            return True
        if isinstance(message, p.RegisterTrigger):
            return self._trigger_admitted(conn, grants, message, out) \
                and self._hooked(conn, grants, "trigger", message, out)
        if isinstance(message, p.RegisterTriggerType):
            if not grants.allow_trigger_type_registration:
                self._forbid(conn, "registertriggertype", message.id,
                             "this worker may not register trigger types "
                             "(allow_trigger_type_registration)", out)
                return False
            return self._hooked(conn, grants, "trigger_type", message, out)
        if isinstance(message, p.RegisterActionType):
            message.function_id = self._own(conn, grants, message.function_id)
            refusal = self._refusal(conn, grants, message.function_id)
            if refusal is not None:
                self._forbid(conn, "registeractiontype", message.id, refusal, out)
                return False
            return True
        if isinstance(message, p.Watch):  # every call's payload: not for these workers
            self._forbid(conn, "watch", "", "workers on an RBAC listener may not watch the "
                                            "daemon's events", out)
            return False
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

    def _call_admitted(self, conn: Connection, grants: Grants, call: p.InvokeFunction,
                       out: Output) -> bool:
        call.function_id = self._own(conn, grants, call.function_id)
        refusal = self._refusal(conn, grants, call.function_id)
        if refusal is not None:
            self._reject(conn, call, ErrorCode.FORBIDDEN, refusal, out)
            return False
        middleware = grants.middleware
        if middleware is not None and call.activation is not None:
            # An owner's obs.call is routed to the observer's target as is: it cannot
            # pass the middleware, so behind one it is not made (obs.emit is).
            self._reject(conn, call, ErrorCode.FORBIDDEN, f"obs.call is not available to "
                                                          f"workers behind a middleware "
                                                          f"({middleware}); use obs.emit",
                         out)
            return False
        if middleware is not None and call.function_id not in ALWAYS:
            # The middleware answers for the call (upstream MiddlewareFunctionInput); to
            # let it through it makes the call itself, from a worker of its own.
            void = call.action is not None and call.action.get("type") == "void"
            call.data = p.to_raw({"function_id": call.function_id,
                                  "payload": p.from_raw(call.data), "action": call.action,
                                  "context": grants.context, "namespace": "default"})
            call.function_id, call.action = middleware, {"type": "void"} if void else None
        return True

    def _trigger_admitted(self, conn: Connection, grants: Grants, msg: p.RegisterTrigger,
                          out: Output) -> bool:
        """A trigger it binds calls its target (and condition) as the daemon: both must
        be functions it may call, and the type one it may bind."""
        refusal = self._trigger_refusal(conn, grants, msg)
        if refusal is None:
            return True
        self._trigger_refused(conn, msg, refusal, out)
        return False

    def _trigger_refusal(self, conn: Connection, grants: Grants,
                         msg: p.RegisterTrigger) -> str | None:
        allowed_types = grants.allowed_trigger_types
        if allowed_types is not None and msg.trigger_type not in allowed_types:
            return f"trigger type '{msg.trigger_type}' is not allowed for this worker " \
                   f"(allowed_trigger_types)"
        msg.function_id = self._own(conn, grants, msg.function_id)
        config = msg.config if isinstance(msg.config, dict) else {}
        condition = config.get("condition_function_id")
        if isinstance(condition, str):
            msg.config = {**config, "condition_function_id": self._own(conn, grants, condition)}
        for target in (msg.function_id, msg.config.get("condition_function_id")):
            if isinstance(target, str):
                refusal = self._refusal(conn, grants, target)
                if refusal is not None:
                    return refusal
        return None

    def _trigger_refused(self, conn: Connection, msg: p.RegisterTrigger, refusal: str,
                         out: Output) -> None:
        self._refused(conn, "trigger", msg.id, refusal, out)
        out.append((conn.id, p.TriggerRegistrationResult(
            id=msg.id, trigger_type=msg.trigger_type, function_id=msg.function_id,
            error=make_error(ErrorCode.FORBIDDEN, refusal))))

    # --- registration hooks -----------------------------------------------------------------

    def _hooked(self, conn: Connection, grants: Grants, kind: str, msg: Registration,
                out: Output) -> bool:
        """True: no hook for ``kind``, the registration goes on now. False: its hook
        decides first (it may deny, or rewrite what the result types allow)."""
        hook = grants.hooks.get(kind)
        if hook is None:
            return True
        handler_name = _REGISTER[type(msg)][1]
        original = grants.own_names.get(msg.id) if isinstance(msg, p.RegisterFunction) \
            else None

        def decided(result: Any, error: p.ErrorBody | None, out: Output) -> None:
            if self.registry.connections.get(conn.id) is not conn:
                return  # it left meanwhile
            if error is not None:
                self._denied(conn, msg, f"{hook} denied it: {error.message}", out)
                return
            answer = p.from_raw(result or p.NULL)
            refusal = _rewrite(msg, answer if isinstance(answer, dict) else {})
            if refusal is None and isinstance(msg, p.RegisterTrigger):
                refusal = self._trigger_refusal(conn, grants, msg)  # maybe a new target
            if refusal is not None:
                self._denied(conn, msg, refusal, out)
                return
            if original is not None:  # a new id still reaches the worker by its name
                grants.own_names[msg.id] = original
            getattr(self, handler_name)(conn, msg, self._now, out)

        self.call_internal(hook, p.to_raw(_hook_input(msg, grants.context)), decided,
                           self.clock, out, source="rbac")
        return False

    def _denied(self, conn: Connection, msg: Registration, reason: str, out: Output) -> None:
        if isinstance(msg, p.RegisterTrigger):
            self._trigger_refused(conn, msg, reason, out)
        else:
            self._forbid(conn, _REGISTER[type(msg)][0], msg.id, reason, out)

    # --- helpers --------------------------------------------------------------------------

    def _own(self, conn: Connection, grants: Grants, function_id: str) -> str:
        """``function_id`` as the daemon knows it: a name the worker registered becomes
        its prefixed id."""
        return grants.daemon_id(function_id, conn.functions)

    def _refusal(self, conn: Connection, grants: Grants, function_id: str) -> str | None:
        entry = self.registry.functions.get(function_id)
        rule = grants.refusal(function_id, entry.metadata if entry is not None else None,
                              own=function_id in conn.functions)
        if rule is None:
            return None
        return f"function '{function_id}' may not be called by this worker ({rule})"

    def _forbid(self, conn: Connection, request_type: str, request_id: str, reason: str,
                out: Output) -> None:
        what = _REFUSED_AS.get(request_type)
        if what is not None:  # logged and told to watchers, as every refused registration
            self._refused(conn, what, request_id, reason, out)
        out.append((conn.id, p.Error(code=ErrorCode.FORBIDDEN, message=reason,
                                     request_type=request_type, request_id=request_id)))


#: A refused registration's kind, as ``registration.refused`` events name it.
_REFUSED_AS = {"registerfunction": "function", "registertriggertype": "trigger type",
               "registeractiontype": "action type"}

#: Each registration's request type, and the router's handler it goes on to.
_REGISTER: dict[type, tuple[str, str]] = {
    p.RegisterFunction: ("registerfunction", "_on_register_function"),
    p.RegisterTrigger: ("registertrigger", "_on_register_trigger"),
    p.RegisterTriggerType: ("registertriggertype", "_on_register_trigger_type"),
}


def _hook_input(msg: Registration, context: dict[str, Any]) -> dict[str, Any]:
    """The upstream ``On...RegistrationInput`` of a registration."""
    if isinstance(msg, p.RegisterFunction):
        return {"function_id": msg.id, "description": msg.description,
                "metadata": msg.metadata, "namespace": "default", "context": context}
    if isinstance(msg, p.RegisterTrigger):
        return {"trigger_id": msg.id, "trigger_type": msg.trigger_type,
                "function_id": msg.function_id, "config": msg.config,
                "metadata": msg.metadata, "namespace": "default", "context": context}
    return {"trigger_type_id": msg.id, "description": msg.description or "",
            "context": context}


def _rewrite(msg: Registration, result: dict[str, Any]) -> str | None:
    """Apply a hook's ``On...RegistrationResult`` (omitted fields keep their value);
    why not, if a field is of the wrong type."""
    fields = {p.RegisterFunction: {"function_id": "id", "description": "description",
                                   "metadata": "metadata"},
              p.RegisterTrigger: {"trigger_id": "id", "trigger_type": "trigger_type",
                                  "function_id": "function_id", "config": "config"},
              p.RegisterTriggerType: {"trigger_type_id": "id",
                                      "description": "description"}}[type(msg)]
    for key, attribute in fields.items():
        value = result.get(key)
        if value is None:
            continue
        wanted = dict if key in ("metadata", "config") else str
        if not isinstance(value, wanted):
            return f"the registration hook's {key} must be {wanted.__name__}"
        setattr(msg, attribute, value)
    return None
