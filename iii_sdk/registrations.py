"""What this worker registered, kept to be replayed after a reconnect, and the
daemon's verdicts on it.

Registrations go out without waiting (as in the official SDK); each returns a handle
(:mod:`iii_sdk.handles`) whose state follows the verdict. Functions and types are
confirmed by one ping per burst (the daemon refuses at once and in order, so a pong
means "accepted"); triggers by their ``triggerregistrationresult``. A refused
registration is not replayed.

Runs on the SDK loop, except the ``add_*`` methods, which build the entry in the
caller's thread and hand it to the loop.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from iii_sdk import protocol as p
from iii_sdk.calls import Calls
from iii_sdk.error_codes import ErrorCode
from iii_sdk.errors import InvocationError, RegistrationRefused
from iii_sdk.handlers import Function, Handler, ProvidedType
from iii_sdk.handles import FunctionRef, Handle, Trigger, TriggerTypeRef
from iii_sdk.options import HttpInvocationConfig
from iii_sdk.session import Link, Session

log = logging.getLogger("iii_sdk")


def invocation_to_wire(value: Any) -> dict[str, Any] | None:
    """An HTTP invocation (ours, the official SDK's pydantic model, or a dict with a
    ``url``) as it travels; None for anything else (a handler)."""
    if isinstance(value, HttpInvocationConfig):
        return value.to_wire()
    if hasattr(value, "model_dump") and hasattr(value, "url"):
        dumped: dict[str, Any] = value.model_dump(exclude_none=True)
        return dumped
    if isinstance(value, dict) and isinstance(value.get("url"), str):
        return value
    return None


def _not_invokable(_data: Any) -> Any:
    raise InvocationError(ErrorCode.FUNCTION_NOT_INVOKABLE,
                          "Function is HTTP-invoked and cannot be invoked locally")


class Registrations:
    def __init__(self, session: Session, calls: Calls) -> None:
        self._session = session
        self._calls = calls
        self.functions: dict[str, Function] = {}
        self._action_types: dict[str, tuple[p.RegisterActionType, FunctionRef]] = {}
        self.trigger_types: dict[str, ProvidedType] = {}
        self._triggers: dict[str, tuple[p.RegisterTrigger, Trigger]] = {}
        #: Registrations sent and not refused yet; the next pong confirms them.
        self._unconfirmed: list[Handle] = []
        self._barrier_due = False

    # --- in the caller's thread -------------------------------------------------------

    def add_function(self, function_id: str, handler: Handler | Any, *,
                     description: str | None, metadata: dict[str, Any] | None,
                     request_format: Any, response_format: Any) -> FunctionRef:
        if not isinstance(function_id, str) or not function_id:
            raise ValueError("function_id must be a non-empty string")
        invocation = invocation_to_wire(handler)
        if invocation is None and not callable(handler):
            raise TypeError("handler must be callable, or an HttpInvocationConfig")
        handle = FunctionRef(function_id, lambda: None, self._session.on_sdk_thread)
        message = p.RegisterFunction(id=function_id, description=description,
                                     metadata=metadata, request_format=request_format,
                                     response_format=response_format, invocation=invocation)
        if invocation is not None:  # the daemon calls it: nothing runs here
            handler = _not_invokable
        self._add(handle, self.functions, Function.of(message, handler, handle), message,
                  p.UnregisterFunction(id=function_id))
        return handle

    def add_action_type(self, action_id: str, function_id: str,
                        description: str | None) -> FunctionRef:
        message = p.RegisterActionType(id=action_id, function_id=function_id,
                                       description=description)
        handle = FunctionRef(action_id, lambda: None, self._session.on_sdk_thread)
        self._add(handle, self._action_types, (message, handle), message, None)
        return handle

    def add_trigger(self, trigger: dict[str, Any]) -> Trigger:
        if not isinstance(trigger, dict):
            raise TypeError("register_trigger() takes a dict with 'type' and 'function_id'")
        trigger_type = trigger.get("type") or trigger.get("trigger_type")
        function_id = trigger.get("function_id")
        if not isinstance(trigger_type, str) or not trigger_type:
            raise ValueError("the trigger needs a 'type'")
        if not isinstance(function_id, str) or not function_id:
            raise ValueError("the trigger needs a 'function_id'")
        config = trigger.get("config") or {}
        if not isinstance(config, dict):
            raise TypeError("config must be a dict")
        trigger_id = trigger.get("id") or str(uuid.uuid4())
        message = p.RegisterTrigger(id=trigger_id, trigger_type=trigger_type,
                                    function_id=function_id, config=config,
                                    metadata=trigger.get("metadata"))
        handle = Trigger(trigger_id, lambda: None, self._session.on_sdk_thread)
        self._add(handle, self._triggers, (message, handle), message,
                  p.UnregisterTrigger(id=trigger_id, trigger_type=trigger_type))
        return handle

    def add_trigger_type(self, type_id: str, description: str, provider: Any
                         ) -> TriggerTypeRef:
        for method in ("register_trigger", "unregister_trigger"):
            if not callable(getattr(provider, method, None)):
                raise TypeError(f"the provider needs a {method}(config) method")
        message = p.RegisterTriggerType(id=type_id, description=description)
        handle = TriggerTypeRef(type_id, lambda: None, self._session.on_sdk_thread)
        self._add(handle, self.trigger_types, ProvidedType(message, provider, handle),
                  message, p.UnregisterTriggerType(id=type_id))
        return handle

    def _add(self, handle: Handle, table: dict[str, Any], entry: Any,
             message: p.Message, unregister: p.Message | None) -> None:
        """Keep ``entry`` in ``table`` (replayed on reconnect) and send ``message``;
        ``handle.unregister()`` removes it and sends ``unregister``."""
        def register() -> None:
            table[handle.id] = entry
            self._send(message, handle)

        def drop() -> None:
            if table.get(handle.id) is entry:
                del table[handle.id]
                if unregister is not None:
                    self._session.send(unregister)

        handle._unregister = lambda: self._session.call_on_loop(drop)
        self._session.call_on_loop(register)

    # --- on the SDK loop ----------------------------------------------------------------

    def replay(self, link: Link) -> None:
        """A new connection: send everything again (types first: bindings wait for them)."""
        for provided in list(self.trigger_types.values()):
            self._send(provided.message, provided.handle, replay=True)
        for function in list(self.functions.values()):
            self._send(function.message, function.handle, replay=True)
        for action, handle in list(self._action_types.values()):
            self._send(action, handle, replay=True)
        for trigger, trigger_handle in list(self._triggers.values()):
            self._send(trigger, trigger_handle, replay=True)

    def _send(self, message: p.Message, handle: Handle, replay: bool = False) -> None:
        if replay:
            handle._resend()
        if not self._session.send(message):
            return
        if isinstance(message, p.RegisterTrigger):
            return
        self._unconfirmed.append(handle)
        if not self._barrier_due:
            self._barrier_due = True
            self._session.loop.call_soon(self._send_barrier)

    def _send_barrier(self) -> None:
        self._barrier_due = False
        batch, self._unconfirmed = self._unconfirmed, []
        if not batch:
            return

        def confirm(_result: Any, exc: BaseException | None) -> None:
            if exc is None:  # else the link dropped: the replay asks again
                for handle in batch:
                    handle._confirm()

        self._calls.ping(confirm)

    def on_rejected(self, message: p.RegistrationRejected) -> None:
        self._refused("registerfunction", message.function_id, message.code, message.message)

    def on_error(self, message: p.Error) -> None:
        if message.request_type is not None and message.request_id is not None:
            self._refused(message.request_type, message.request_id, message.code,
                          message.message)
        else:
            log.warning("the daemon reported %s: %s", message.code, message.message)

    def _refused(self, request_type: str, registration_id: str, code: str,
                 message: str) -> None:
        """The daemon refused a registration: mark its handle, stop replaying it."""
        tables: dict[str, tuple[dict[str, Any], Callable[[Any], Handle]]] = {
            "registerfunction": (self.functions, lambda entry: entry.handle),
            "registertriggertype": (self.trigger_types, lambda entry: entry.handle),
            "registeractiontype": (self._action_types, lambda entry: entry[1]),
        }
        handle: Handle | None = None
        if request_type in tables:
            table, handle_of = tables[request_type]
            entry = table.pop(registration_id, None)
            handle = handle_of(entry) if entry is not None else None
        log.error("the daemon refused %s %r (%s): %s", request_type.removeprefix("register"),
                  registration_id, code, message)
        if handle is not None:
            handle._settle(RegistrationRefused(code, message, registration_id))

    def on_trigger_verdict(self, message: p.TriggerRegistrationResult) -> None:
        registered = self._triggers.get(message.id)
        error = message.error
        if error is None:
            if registered is not None:
                registered[1]._settle(None)
            return
        body = p.error_body(error, ErrorCode.TRIGGER_REGISTRATION_FAILED)
        log.error("trigger %r (%s) was refused: %s", message.id, message.trigger_type,
                  body.message)
        if registered is not None:
            del self._triggers[message.id]  # not replayed after a reconnect
            registered[1]._settle(RegistrationRefused(body.code, body.message, message.id))
