"""Running the user's code: function handlers and trigger-type providers.

Sync callbacks run on pool threads; async ones start at once on the SDK loop and
become tracked tasks when they wait (most never do: they cost no task), so a slow
handler never blocks the connection. A handler's return value goes back as the
result; what it raises goes back as an error (``InvocationError`` keeps its code,
anything else is ``invocation_failed`` with the traceback).

At most ``max_concurrency`` calls of sync handlers run at once, and the pool has a
thread for each (plus a few for providers): stuck handlers never keep another function
waiting for a thread, and the call past the limit is refused at once with
``worker_busy`` instead of waiting unseen. Async handlers hold no thread (a stuck one
holds a task) and are not limited: they may call the worker's own functions, 50 deep
or 500 wide, without refusing themselves. A result too large for a frame fails its own
call (``result_too_large``); at shutdown every call still running is answered
``worker_stopping``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iii_sdk import eager
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode
from iii_sdk.errors import InvocationError
from iii_sdk.handler_pool import HandlerPool
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


#: At most one warning this often about calls refused worker_busy (with their count).
BUSY_WARNING_EVERY_S = 5.0
#: Pool threads beyond ``max_concurrency``: trigger-type providers get one even while
#: every call is stuck.
PROVIDER_THREADS = 8


class Handlers:
    def __init__(self, session: Session,
                 resolve: Callable[[Any], Any] | None = None) -> None:
        self._session = session
        #: Turns channel refs in a handler's input into readers and writers.
        self._resolve = resolve
        self._max_concurrency = max(1, session.options.max_concurrency)
        self._pool = HandlerPool(self._max_concurrency + PROVIDER_THREADS)
        self._tasks: set[asyncio.Task[None]] = set()
        #: Calls running now: a token of each -> (function id, invocation id).
        self._active: dict[object, tuple[str, str | None]] = {}
        #: Of those, the calls of sync handlers (each holds a pool thread).
        self._threaded = 0
        #: Set by stop(): calls are answered worker_stopping from then on.
        self._stopping = False
        #: Calls refused worker_busy since the last warning, and when that was.
        self._refused = 0
        self._refused_warned_at = -BUSY_WARNING_EVERY_S

    @property
    def active(self) -> int:
        """Calls running now."""
        return len(self._active)

    def _refuse(self, function_id: str, invocation_id: str | None, code: str,
                message: str) -> None:
        if invocation_id is not None:
            self._session.send(p.InvocationResult(
                invocation_id=invocation_id, function_id=function_id,
                error=p.ErrorBody(code=code, message=message)))

    def _warn_busy(self, function_id: str) -> None:
        """One warning for a burst of refusals, not one per call: a flood of void calls
        must not flood the log too."""
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_warned_at < BUSY_WARNING_EVERY_S:
            return
        log.warning("refused %d call%s (the last of %s): %d calls already run "
                    "(max_concurrency)", self._refused, "" if self._refused == 1 else "s",
                    function_id, self._threaded)
        self._refused, self._refused_warned_at = 0, now

    def invoke(self, message: p.InvokeFunction, function: Function | None) -> None:
        """The daemon routed a call to us: run the handler, send its answer."""
        invocation_id = message.invocation_id
        if function is None:
            self._refuse(message.function_id, invocation_id, ErrorCode.FUNCTION_NOT_FOUND,
                         f"Function '{message.function_id}' not found")
            return
        if self._stopping:
            self._refuse(message.function_id, invocation_id, ErrorCode.WORKER_STOPPING,
                         "the worker is shutting down")
            return
        if not function.is_async and self._threaded >= self._max_concurrency:
            self._warn_busy(message.function_id)
            self._refuse(message.function_id, invocation_id, ErrorCode.WORKER_BUSY,
                         f"the worker already runs {self._max_concurrency} calls, its "
                         f"max_concurrency; try again later")
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
        token = object()
        self._active[token] = (function_id, invocation_id)
        threaded = not function.is_async
        self._threaded += threaded

        def done(result: Any, exc: BaseException | None) -> None:
            self._threaded -= threaded
            if self._active.pop(token, None) is not None:  # else: answered at stop()
                self._reply(function_id, invocation_id, result, exc)

        self.run(function.call, (data, metadata), function.is_async, done, context)

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
                    enter(context)  # in its own copy of the context (eager.start)
                try:
                    result = await fn(*args)
                except Exception as exc:
                    done(None, exc)
                else:
                    done(result, None)
            # At once: a handler that does not wait costs no task (most do not).
            task = eager.start(loop, run())
            if task is not None:
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return

        def finished(result: Any, exc: BaseException | None) -> None:
            # On the handler's thread: back to the loop, unless it is gone (shutdown).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(done, result, exc)

        if context is None:
            self._pool.submit(fn, args, finished)
        else:
            self._pool.submit(run_in, (context, fn, *args), finished)

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
                limit = self._session.options.max_frame_bytes
                # The frame around the result: type, ids and punctuation.
                if len(raw) + len(function_id) + len(invocation_id) + 128 <= limit:
                    self._session.send(p.InvocationResult(
                        invocation_id=invocation_id, function_id=function_id, result=raw))
                    return
                exc = InvocationError(ErrorCode.RESULT_TOO_LARGE,
                                      f"the result of {function_id} is {len(raw)} bytes, "
                                      f"more than the frame limit of {limit} bytes "
                                      f"(max_frame_bytes)")
                log.error("%s", exc.message)
        self._session.send(p.InvocationResult(invocation_id=invocation_id,
                                              function_id=function_id,
                                              error=error_body(exc)))

    def stop(self) -> None:
        """Answer every call still running ``worker_stopping`` (on the loop, before the
        link closes) and every later one too; their handlers' results are dropped."""
        self._stopping = True
        active, self._active = self._active, {}
        for function_id, invocation_id in active.values():
            self._refuse(function_id, invocation_id, ErrorCode.WORKER_STOPPING,
                         "the worker shut down while the call ran")

    async def cancel_async(self) -> None:
        """Cancel the async handlers still running (on the loop, at shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        self._pool.close()
