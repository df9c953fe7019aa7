"""Running the user's code: function handlers and trigger-type providers.

Sync callbacks run in a thread pool, async ones as tracked tasks on the SDK loop, so a
slow handler never blocks the connection. A handler's return value goes back as the
result; what it raises goes back as an error (``InvocationError`` keeps its code,
anything else is ``invocation_failed`` with the traceback).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode
from iii_sdk.errors import InvocationError
from iii_sdk.handles import FunctionRef, TriggerTypeRef
from iii_sdk.invocation_context import InvocationContext, enter, run_in
from iii_sdk.options import TriggerConfig
from iii_sdk.protocol import NULL
from iii_sdk.session import Session

log = logging.getLogger("iii_sdk")

Handler = Callable[..., Any]


@dataclass(slots=True, eq=False)
class Function:
    """A function this worker serves."""

    message: p.RegisterFunction
    handler: Handler
    is_async: bool
    pass_metadata: str  # "no" | "positional" | "keyword"
    handle: FunctionRef

    @classmethod
    def of(cls, message: p.RegisterFunction, handler: Handler,
           handle: FunctionRef) -> Function:
        return cls(message, handler,
                   is_async=inspect.iscoroutinefunction(handler)
                   or inspect.iscoroutinefunction(type(handler).__call__),
                   pass_metadata=_metadata_mode(handler), handle=handle)

    def call(self, data: Any, metadata: Any) -> Any:
        if self.pass_metadata == "positional":
            return self.handler(data, metadata)
        if self.pass_metadata == "keyword":
            return self.handler(data, metadata=metadata)
        return self.handler(data)


@dataclass(slots=True, eq=False)
class ProvidedType:
    """A trigger type this worker provides."""

    message: p.RegisterTriggerType
    provider: Any
    handle: TriggerTypeRef


def _metadata_mode(handler: Handler) -> str:
    """How a handler wants per-call metadata: ``handler(data, metadata)`` or not at all."""
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return "no"
    if any(prm.name == "metadata" and prm.kind is prm.KEYWORD_ONLY for prm in params):
        return "keyword"
    positional = [prm for prm in params
                  if prm.kind in (prm.POSITIONAL_ONLY, prm.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2 or any(prm.kind is prm.VAR_POSITIONAL for prm in params):
        return "positional"
    return "no"


def error_body(exc: BaseException) -> p.ErrorBody:
    if isinstance(exc, InvocationError):
        return p.ErrorBody(code=exc.code, message=exc.message, stacktrace=exc.stacktrace)
    # The exception's type is part of the message: "KeyError: 'a'" says more than "'a'".
    text = str(exc)
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    stack = "".join(traceback.format_exception(exc))
    return p.ErrorBody(code=ErrorCode.INVOCATION_FAILED, message=message, stacktrace=stack)


class Handlers:
    def __init__(self, session: Session,
                 resolve: Callable[[Any], Any] | None = None) -> None:
        self._session = session
        #: Turns channel refs in a handler's input into readers and writers.
        self._resolve = resolve
        self._executor = concurrent.futures.ThreadPoolExecutor(
            thread_name_prefix="iii-handler")
        self._tasks: set[asyncio.Task[None]] = set()

    def invoke(self, message: p.InvokeFunction, function: Function | None) -> None:
        """The daemon routed a call to us: run the handler, send its answer."""
        invocation_id = message.invocation_id
        if function is None:
            if invocation_id is not None:
                self._session.send(p.InvocationResult(
                    invocation_id=invocation_id, function_id=message.function_id,
                    error=p.ErrorBody(code=ErrorCode.FUNCTION_NOT_FOUND,
                                      message=f"Function '{message.function_id}' not found")))
            return
        data = p.from_raw(message.data)
        if self._resolve is not None and b'"channel_id"' in bytes(message.data):
            data = self._resolve(data)  # only payloads that may hold a channel ref
        metadata = None if message.metadata is NULL else p.from_raw(message.metadata)
        function_id = function.message.id
        depth = message.observe_depth
        context = InvocationContext(
            function_id, invocation_id,
            message.caller if isinstance(message.caller, dict) else None,
            depth if isinstance(depth, int) and not isinstance(depth, bool) and depth > 0
            else 0, message.activation)
        self.run(function.call, (data, metadata), function.is_async,
                 lambda result, exc: self._reply(function_id, invocation_id, result, exc),
                 context)

    def provide(self, message: p.RegisterTrigger | p.UnregisterTrigger,
                provided: ProvidedType | None, method: str) -> None:
        """Hand a binding of a type we provide to its provider; answer registrations."""
        if provided is None:
            return  # as the official SDK: silence for a type we do not provide
        config = TriggerConfig(id=message.id, function_id=message.function_id or "",
                               config=message.config, metadata=message.metadata)
        callback = getattr(provided.provider, method)
        answer = isinstance(message, p.RegisterTrigger)

        def done(_result: Any, exc: BaseException | None) -> None:
            if exc is not None:
                log.error("%s.%s(%s) raised %s", type(provided.provider).__name__, method,
                          message.id, exc)
            if answer:
                self._session.send(p.TriggerRegistrationResult(
                    id=message.id, trigger_type=message.trigger_type or "",
                    function_id=message.function_id or "",
                    error=None if exc is None else {
                        "code": ErrorCode.TRIGGER_REGISTRATION_FAILED, "message": str(exc)}))

        self.run(callback, (config,), inspect.iscoroutinefunction(callback), done)

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], is_async: bool,
            done: Callable[[Any, BaseException | None], None],
            context: InvocationContext | None = None) -> None:
        """Run user code off the loop's back: async as tracked tasks on the loop, sync
        in the thread pool; ``done(result, exc)`` is then called on the loop (not at
        all if shutdown cancelled it first). ``context``: the invocation it runs in."""
        loop = self._session.loop
        if is_async:
            async def run() -> None:
                if context is not None:
                    enter(context)  # this task's own copy of the context
                try:
                    result = await fn(*args)
                except Exception as exc:
                    done(None, exc)
                else:
                    done(result, None)
            task = loop.create_task(run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return

        def finished(future: concurrent.futures.Future[Any]) -> None:
            if not future.cancelled():
                exc = future.exception()
                done(None if exc else future.result(), exc)

        submitted = self._executor.submit(fn, *args) if context is None \
            else self._executor.submit(run_in, context, fn, *args)
        submitted.add_done_callback(
            lambda future: loop.call_soon_threadsafe(finished, future))

    def _reply(self, function_id: str, invocation_id: str | None, result: Any,
               exc: BaseException | None) -> None:
        if exc is not None and not isinstance(exc, InvocationError):
            log.error("handler of %s raised %s: %s", function_id, type(exc).__name__, exc)
        if invocation_id is None:
            return
        if exc is None:
            try:
                raw = p.to_raw(result)
            except TypeError as err:
                exc = InvocationError(ErrorCode.INVOCATION_FAILED,
                                      f"the result of {function_id} is {err}")
            else:
                self._session.send(p.InvocationResult(invocation_id=invocation_id,
                                                      function_id=function_id, result=raw))
                return
        self._session.send(p.InvocationResult(invocation_id=invocation_id,
                                              function_id=function_id,
                                              error=error_body(exc)))

    async def cancel_async(self) -> None:
        """Cancel the async handlers still running (on the loop, at shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
