"""The worker API: register functions, call functions, over one daemon connection.

Mirrors the official Python ``iii-sdk`` (``from iii import register_worker``) so a
worker moves between the two by changing one import. A background thread runs the
connection's event loop, so plain scripts work; sync handlers run in a thread pool,
async handlers on that loop.

Threading rule: everything that touches the connection or the pending-call table runs
on the SDK loop; public methods hand work to it with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import inspect
import itertools
import logging
import os
import platform
import random
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iii_sdk import protocol as p
from iii_sdk.actions import action_to_wire
from iii_sdk.client_link import ClientLink, WsClientLink, open_ws_link
from iii_sdk.error_codes import ErrorCode
from iii_sdk.errors import ConnectionFailed, InvocationError, RegistrationRefused
from iii_sdk.limits import DEFAULT_MAX_FRAME_BYTES, DEFAULT_TIMEOUT_MS
from iii_sdk.paths import resolve_socket_path, socket_path_from_url
from iii_sdk.protocol import NULL
from iii_sdk.registration import FunctionRef, Handle, Trigger, TriggerTypeRef
from iii_sdk.version import __version__

log = logging.getLogger("iii_sdk")

DEFAULT_INVOCATION_TIMEOUT_MS = DEFAULT_TIMEOUT_MS
#: A connection that lasted this long resets the reconnect backoff.
STABLE_CONNECTION_S = 5.0

Handler = Callable[..., Any]


@dataclass(slots=True)
class ReconnectionConfig:
    """Backoff between connection attempts: 1 s doubling, capped at 30 s, with jitter."""

    initial_delay_ms: int = 1000
    max_delay_ms: int = 30_000
    backoff_multiplier: float = 2.0
    jitter_factor: float = 0.1
    #: -1: retry forever.
    max_retries: int = -1


@dataclass(slots=True)
class InitOptions:
    """Options of :func:`register_worker`."""

    #: Shown in ``iii list workers``; ``III_WORKER_NAME`` overrides it; default ``host:pid``.
    worker_name: str | None = None
    #: Local timeout of :meth:`III.trigger` calls that do not set ``timeout_ms``.
    invocation_timeout_ms: int = DEFAULT_INVOCATION_TIMEOUT_MS
    reconnection_config: ReconnectionConfig = field(default_factory=ReconnectionConfig)
    #: How long :func:`register_worker` waits for the first connection before it
    #: returns anyway (it keeps retrying in the background).
    connect_timeout_s: float = 30.0
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    #: Extra WebSocket handshake headers; ``Authorization: Bearer $III_TOKEN`` is added
    #: unless given here (as the official SDK does).
    headers: dict[str, str] | None = None


@dataclass(slots=True)
class TriggerConfig:
    """What a trigger-type provider is told about a binding to start or stop."""

    id: str
    function_id: str
    config: Any
    metadata: Any = None


@dataclass(slots=True, eq=False)
class _TriggerType:
    message: p.RegisterTriggerType
    provider: Any
    handle: TriggerTypeRef


@dataclass(slots=True, eq=False)
class _Function:
    message: p.RegisterFunction
    handler: Handler
    is_async: bool
    pass_metadata: str  # "no" | "positional" | "keyword"
    handle: FunctionRef

    def call(self, data: Any, metadata: Any) -> Any:
        if self.pass_metadata == "positional":
            return self.handler(data, metadata)
        if self.pass_metadata == "keyword":
            return self.handler(data, metadata=metadata)
        return self.handler(data)


@dataclass(slots=True, eq=False)
class _Pending:
    function_id: str
    settle: Callable[[Any, BaseException | None], None]
    timer: asyncio.TimerHandle | None = None
    sent: bool = False


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


def _error_body(exc: BaseException) -> p.ErrorBody:
    if isinstance(exc, InvocationError):
        return p.ErrorBody(code=exc.code, message=exc.message, stacktrace=exc.stacktrace)
    message = str(exc) or type(exc).__name__
    stack = "".join(traceback.format_exception(exc))
    return p.ErrorBody(code=ErrorCode.INVOCATION_FAILED, message=message, stacktrace=stack)


def _wire_error(error: Any, function_id: str | None, invocation_id: str | None
                ) -> InvocationError:
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message")
        stack = error.get("stacktrace")
        return InvocationError(
            code if isinstance(code, str) else "UNKNOWN",
            message if isinstance(message, str) else "<no message>",
            function_id=function_id,
            stacktrace=stack if isinstance(stack, str) else None,
            invocation_id=invocation_id,
        )
    return InvocationError("UNKNOWN", str(error), function_id=function_id,
                           invocation_id=invocation_id)


def _backoff_s(config: ReconnectionConfig, attempt: int) -> float:
    """Seconds before connection attempt ``attempt + 1``: doubling, capped, jittered."""
    delay = min(config.initial_delay_ms * config.backoff_multiplier ** attempt,
                config.max_delay_ms)
    delay += delay * config.jitter_factor * (2 * random.random() - 1)
    return max(delay, 0) / 1000


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # optional speed-up
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class III:
    """A connection to the daemon that serves functions and calls functions."""

    def __init__(self, address: str, options: InitOptions | None = None, *,
                 introduce: bool = True) -> None:
        #: Whether this connection tells the daemon who it is (engine::workers::register),
        #: which lists it as a worker; a plain client (see :func:`connect`) does not.
        self._introduce = introduce
        self._ws_url = address if address.startswith(("ws://", "wss://")) else None
        path = socket_path_from_url(address)
        if path is None and self._ws_url is None:
            raise ConnectionFailed(
                f"unsupported address {address!r}: use a Unix socket path, a unix:// URL "
                "or a ws:// URL")
        self._address = address
        self._socket_path = path
        self._options = options or InitOptions()
        self._functions: dict[str, _Function] = {}
        self._action_types: dict[str, tuple[p.RegisterActionType, FunctionRef]] = {}
        self._trigger_types: dict[str, _TriggerType] = {}
        self._triggers: dict[str, tuple[p.RegisterTrigger, Trigger]] = {}
        #: Registrations sent and not refused yet; the next pong confirms them.
        self._unconfirmed: list[Handle] = []
        self._barrier_due = False
        self._pending: dict[str, _Pending] = {}
        self._outbox: list[p.InvokeFunction] = []
        self._link: ClientLink | WsClientLink | None = None
        self._worker_id: str | None = None
        self._reattach_token: str | None = None
        self._running = True
        self._connected = threading.Event()
        self._ever_warned = False
        self._seq = itertools.count(1)  # next() is atomic: trigger() runs on any thread
        # UUID-shaped ids (engines may parse them) for the price of a counter.
        self._id_prefix = str(uuid.uuid4())[:24]
        self._executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="iii-handler")
        self._loop = _new_loop()
        self._connector: asyncio.Task[None] | None = None
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._pings: collections.deque[Callable[[Any, BaseException | None], None]] = (
            collections.deque())
        self._thread = threading.Thread(target=self._run_loop, name="iii-sdk", daemon=True)
        self._thread.start()
        self._loop.call_soon_threadsafe(self._start_connector)

    # --- lifecycle ----------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _start_connector(self) -> None:
        self._connector = self._loop.create_task(self._connect_forever())

    @property
    def worker_id(self) -> str | None:
        """The id the daemon gave this connection (None before the first connection)."""
        return self._worker_id

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_until_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    def shutdown(self) -> None:
        """Close the connection and stop the background thread; calls still waiting fail
        with ``invocation_stopped``. The instance cannot be used afterwards."""
        if not self._thread.is_alive():
            return
        if threading.current_thread() is self._thread:
            raise RuntimeError("shutdown() cannot run on the SDK loop; use shutdown_async()")
        future = asyncio.run_coroutine_threadsafe(self.shutdown_async(), self._loop)
        future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def shutdown_async(self) -> None:
        self._running = False
        if self._connector is not None:
            self._connector.cancel()
        link, self._link = self._link, None
        if link is not None:
            await link.aclose()
        if self._connector is not None:
            await asyncio.gather(self._connector, return_exceptions=True)
        self._connected.clear()
        self._fail_pending(lambda pending: True, "the worker shut down")
        self._fail_pings("the worker shut down")
        tasks = list(self._handler_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> III:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # --- connection ---------------------------------------------------------------------

    async def _connect_forever(self) -> None:
        config = self._options.reconnection_config
        attempt = 0
        while self._running:
            lost = asyncio.Event()
            try:
                link = await self._open_link(lost.set)
            except OSError as exc:
                if config.max_retries != -1 and attempt >= config.max_retries:
                    log.error("giving up on %s after %d attempts", self._address, attempt)
                    self._fail_pending(lambda pending: True, "cannot reach the daemon")
                    return
                if not self._ever_warned:
                    log.warning("iii daemon not reachable at %s (%s); start it with "
                                "`iii daemon start`; retrying", self._address,
                                exc.strerror or exc)
                    self._ever_warned = True
                await asyncio.sleep(_backoff_s(config, attempt))
                attempt += 1
                continue
            opened = self._loop.time()
            self._on_connected(link)
            await lost.wait()
            self._on_lost()
            # Only a connection that stayed up earns a fresh start: one the other end
            # closes at once must not turn into a tight reconnect loop.
            if self._loop.time() - opened >= STABLE_CONNECTION_S:
                attempt = 0
            elif self._running:
                await asyncio.sleep(_backoff_s(config, attempt))
                attempt += 1

    async def _open_link(self, on_lost: Callable[[], None]) -> ClientLink | WsClientLink:
        """Connect over the address's transport.

        Raises:
            OSError: not reachable (the connect loop retries).
        """
        if self._ws_url is not None:
            headers = dict(self._options.headers or {})
            token = os.environ.get("III_TOKEN")
            if token and "Authorization" not in headers:
                headers["Authorization"] = f"Bearer {token}"
            return await open_ws_link(self._ws_url, self._on_message, on_lost,
                                      self._options.max_frame_bytes, headers)
        assert self._socket_path is not None
        _, link = await self._loop.create_unix_connection(
            functools.partial(ClientLink, self._on_message, on_lost,
                              self._options.max_frame_bytes),
            os.fspath(self._socket_path),
        )
        return link

    def _on_connected(self, link: ClientLink | WsClientLink) -> None:
        self._link = link
        # A reconnect first asks the daemon to retire our previous connection, so the
        # replayed registrations below do not collide with what it still holds.
        if self._worker_id is not None and self._reattach_token is not None:
            link.send(p.Reattach(previous_worker_id=self._worker_id,
                                 reattach_token=self._reattach_token))
        for trigger_type in list(self._trigger_types.values()):
            self._send_registration(trigger_type.message, trigger_type.handle, replay=True)
        for function in list(self._functions.values()):
            self._send_registration(function.message, function.handle, replay=True)
        for action, handle in list(self._action_types.values()):
            self._send_registration(action, handle, replay=True)
        for trigger, trigger_handle in list(self._triggers.values()):
            self._send_registration(trigger, trigger_handle, replay=True)
        outbox, self._outbox = self._outbox, []
        for message in outbox:
            pending = self._pending.get(message.invocation_id or "")
            if message.invocation_id is None or pending is not None:
                link.send(message)
                if pending is not None:
                    pending.sent = True
        if self._introduce:
            link.send(p.InvokeFunction(function_id="engine::workers::register",
                                       data=p.to_raw(self._metadata()),
                                       action={"type": "void"}))
        self._connected.set()

    def _on_lost(self) -> None:
        self._link = None
        self._connected.clear()
        self._fail_pings("the connection to the daemon was lost")
        if self._running:
            log.warning("lost the connection to %s; reconnecting", self._address)
        # Calls already sent can no longer be answered; calls not yet sent wait.
        self._fail_pending(lambda pending: pending.sent, "the connection to the daemon was lost")

    def _metadata(self) -> dict[str, Any]:
        name = (os.environ.get("III_WORKER_NAME") or self._options.worker_name
                or f"{socket.gethostname()}:{os.getpid()}")
        return {
            "runtime": "python",
            "version": __version__,
            "name": name,
            "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
            "pid": os.getpid(),
            "sdk": "iii_sdk",
        }

    def _send(self, message: p.Message) -> bool:
        """Write now if connected (on the loop). False when not connected."""
        link = self._link
        if link is None:
            return False
        link.send(message)
        return True

    # --- incoming -----------------------------------------------------------------------

    def _on_message(self, message: p.Message) -> None:
        handler = _DISPATCH.get(type(message))
        if handler is not None:
            handler(self, message)

    def _on_pong(self, message: p.Pong) -> None:
        if self._pings:
            self._pings.popleft()(None, None)

    def _on_welcome(self, message: p.WorkerRegistered) -> None:
        self._worker_id = message.worker_id
        self._reattach_token = message.reattach_token

    def _on_rejected(self, message: p.RegistrationRejected) -> None:
        self._refused("registerfunction", message.function_id, message.code, message.message)

    def _on_error(self, message: p.Error) -> None:
        if message.request_type is not None and message.request_id is not None:
            self._refused(message.request_type, message.request_id, message.code,
                          message.message)
        else:
            log.warning("the daemon reported %s: %s", message.code, message.message)

    # --- registration verdicts ------------------------------------------------------------

    def _send_registration(self, message: p.Message, handle: Handle,
                           replay: bool = False) -> None:
        """Send a registration; functions and types are confirmed by the next pong (the
        daemon refuses at once, in order), triggers by their triggerregistrationresult."""
        if replay:
            handle._resend()
        if not self._send(message):
            return
        if isinstance(message, p.RegisterTrigger):
            return
        self._unconfirmed.append(handle)
        if not self._barrier_due:
            self._barrier_due = True
            self._loop.call_soon(self._send_barrier)

    def _send_barrier(self) -> None:
        self._barrier_due = False
        batch, self._unconfirmed = self._unconfirmed, []
        if not batch or not self._send(p.Ping()):
            return

        def confirm(_result: Any, exc: BaseException | None) -> None:
            if exc is None:  # else the link dropped: the replay asks again
                for handle in batch:
                    handle._confirm()

        self._pings.append(confirm)

    def _refused(self, request_type: str, registration_id: str, code: str,
                 message: str) -> None:
        """The daemon refused a registration: mark its handle, stop replaying it."""
        handle: Handle | None = None
        if request_type == "registerfunction":
            function = self._functions.pop(registration_id, None)
            handle = function.handle if function is not None else None
        elif request_type == "registertriggertype":
            provided = self._trigger_types.pop(registration_id, None)
            handle = provided.handle if provided is not None else None
        elif request_type == "registeractiontype":
            action = self._action_types.pop(registration_id, None)
            handle = action[1] if action is not None else None
        log.error("the daemon refused %s %r (%s): %s", request_type.removeprefix("register"),
                  registration_id, code, message)
        if handle is not None:
            handle._settle(RegistrationRefused(code, message, registration_id))

    def _trigger_verdict(self, message: p.TriggerRegistrationResult) -> None:
        registered = self._triggers.get(message.id)
        error = message.error
        if error is None:
            if registered is not None:
                registered[1]._settle(None)
            return
        code = error.get("code") if isinstance(error, dict) else None
        text = error.get("message") if isinstance(error, dict) else None
        code = code if isinstance(code, str) else ErrorCode.TRIGGER_REGISTRATION_FAILED
        text = text if isinstance(text, str) else str(error)
        log.error("trigger %r (%s) was refused: %s", message.id, message.trigger_type, text)
        if registered is not None:
            del self._triggers[message.id]  # not replayed after a reconnect
            registered[1]._settle(RegistrationRefused(code, text, message.id))

    def _on_result(self, message: p.InvocationResult) -> None:
        pending = self._pending.pop(message.invocation_id, None)
        if pending is None:
            return  # timed out locally already
        if pending.timer is not None:
            pending.timer.cancel()
        if message.error is not None:
            pending.settle(None, _wire_error(message.error, pending.function_id,
                                             message.invocation_id))
        else:
            pending.settle(p.from_raw(message.result), None)

    def _on_invoke(self, message: p.InvokeFunction) -> None:
        function = self._functions.get(message.function_id)
        invocation_id = message.invocation_id
        if function is None:
            if invocation_id is not None:
                self._send(p.InvocationResult(
                    invocation_id=invocation_id, function_id=message.function_id,
                    error=p.ErrorBody(code=ErrorCode.FUNCTION_NOT_FOUND,
                                      message=f"Function '{message.function_id}' not found")))
            return
        data = p.from_raw(message.data)
        metadata = None if message.metadata is NULL else p.from_raw(message.metadata)
        function_id = function.message.id
        self._run_user_code(function.call, (data, metadata), function.is_async,
                            lambda result, exc: self._reply(function_id, invocation_id,
                                                            result, exc))

    def _run_user_code(self, fn: Callable[..., Any], args: tuple[Any, ...], is_async: bool,
                       done: Callable[[Any, BaseException | None], None]) -> None:
        """Run a handler or provider callback off the loop's back: async ones as tracked
        tasks on the loop, sync ones in the thread pool; ``done(result, exc)`` is then
        called on the loop (not at all if shutdown cancelled it first)."""
        if is_async:
            async def run() -> None:
                try:
                    result = await fn(*args)
                except Exception as exc:
                    done(None, exc)
                else:
                    done(result, None)
            task = self._loop.create_task(run())
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_tasks.discard)
            return

        def finished(future: concurrent.futures.Future[Any]) -> None:
            if not future.cancelled():
                exc = future.exception()
                done(None if exc else future.result(), exc)

        self._executor.submit(fn, *args).add_done_callback(
            lambda future: self._loop.call_soon_threadsafe(finished, future))

    def _provide(self, message: p.RegisterTrigger | p.UnregisterTrigger, method: str) -> None:
        """Hand a binding of a type we provide to its provider; answer registrations."""
        provided = self._trigger_types.get(message.trigger_type or "")
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
                self._send(p.TriggerRegistrationResult(
                    id=message.id, trigger_type=message.trigger_type or "",
                    function_id=message.function_id or "",
                    error=None if exc is None else {
                        "code": ErrorCode.TRIGGER_REGISTRATION_FAILED, "message": str(exc)}))

        self._run_user_code(callback, (config,), inspect.iscoroutinefunction(callback), done)

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
                self._send(p.InvocationResult(invocation_id=invocation_id,
                                              function_id=function_id, result=raw))
                return
        self._send(p.InvocationResult(invocation_id=invocation_id, function_id=function_id,
                                      error=_error_body(exc)))

    # --- registration -------------------------------------------------------------------

    def register_function(
        self,
        function_id: str,
        handler: Handler,
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        request_format: Any = None,
        response_format: Any = None,
    ) -> FunctionRef:
        """Serve ``function_id`` with ``handler(data)`` (or ``handler(data, metadata)``).

        Sync handlers run in a thread pool, async ones on the SDK loop. What the handler
        returns is the caller's result; what it raises reaches the caller as an error
        (``InvocationError`` keeps its code, anything else is ``invocation_failed``).
        """
        if not isinstance(function_id, str) or not function_id:
            raise ValueError("function_id must be a non-empty string")
        if not callable(handler):
            raise TypeError("handler must be callable")
        handle = FunctionRef(function_id, lambda: None, self._on_sdk_thread)
        function = _Function(
            message=p.RegisterFunction(id=function_id, description=description,
                                       metadata=metadata, request_format=request_format,
                                       response_format=response_format),
            handler=handler,
            is_async=inspect.iscoroutinefunction(handler)
            or inspect.iscoroutinefunction(type(handler).__call__),
            pass_metadata=_metadata_mode(handler),
            handle=handle,
        )
        self._register(handle, self._functions, function, function.message,
                       p.UnregisterFunction(id=function_id))
        return handle

    def register_action_type(self, action_id: str, handler: Handler, *,
                             description: str | None = None) -> FunctionRef:
        """(extension) Provide the TriggerAction ``{type: action_id, ...}``.

        ``handler`` gets ``{function_id, payload, action, caller}`` for each call made
        with this action; what it returns (or raises) is what that caller gets. It runs
        the target itself, when it likes, with :meth:`trigger` / :meth:`trigger_async`.
        The handle follows the action type's registration.
        """
        function_id = f"action::{action_id}"
        self.register_function(function_id, handler, description=description)
        message = p.RegisterActionType(id=action_id, function_id=function_id,
                                       description=description)
        handle = FunctionRef(action_id, lambda: None, self._on_sdk_thread)
        self._register(handle, self._action_types, (message, handle), message, None)
        return handle

    def register_trigger(self, trigger: dict[str, Any]) -> Trigger:
        """Bind a trigger: ``{"type", "function_id", "config"?, "metadata"?, "id"?}``.

        Sent without waiting; the returned handle's ``state`` / ``ready()`` tell the
        daemon's verdict. Replayed with the same id after a reconnect (unless refused),
        and removed by the daemon when this worker disconnects.
        """
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
        handle = Trigger(trigger_id, lambda: None, self._on_sdk_thread)
        self._register(handle, self._triggers, (message, handle), message,
                       p.UnregisterTrigger(id=trigger_id, trigger_type=trigger_type))
        return handle

    def register_trigger_type(self, type_id: str, description: str, provider: Any
                              ) -> TriggerTypeRef:
        """Provide the trigger type ``type_id``.

        ``provider.register_trigger(cfg)`` / ``provider.unregister_trigger(cfg)`` (sync or
        async; ``cfg`` is a :class:`TriggerConfig`) are called for each binding of this
        type; raising in ``register_trigger`` refuses the binding. The provider fires a
        binding by calling ``cfg.function_id`` with :meth:`trigger`.
        """
        for method in ("register_trigger", "unregister_trigger"):
            if not callable(getattr(provider, method, None)):
                raise TypeError(f"the provider needs a {method}(config) method")
        message = p.RegisterTriggerType(id=type_id, description=description)
        handle = TriggerTypeRef(type_id, lambda: None, self._on_sdk_thread)
        self._register(handle, self._trigger_types, _TriggerType(message, provider, handle),
                       message, p.UnregisterTriggerType(id=type_id))
        return handle

    def _register(self, handle: Handle, table: dict[str, Any], entry: Any,
                  message: p.Message, unregister: p.Message | None) -> None:
        """Keep ``entry`` in ``table`` (replayed on reconnect) and send ``message``;
        ``handle.unregister()`` removes it and sends ``unregister``."""
        def register() -> None:
            table[handle.id] = entry
            self._send_registration(message, handle)

        def drop() -> None:
            if table.get(handle.id) is entry:
                del table[handle.id]
                if unregister is not None:
                    self._send(unregister)

        handle._unregister = lambda: self._call_on_loop(drop)
        self._call_on_loop(register)

    def _on_sdk_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _call_on_loop(self, fn: Callable[[], None]) -> None:
        if threading.current_thread() is self._thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    # --- calls --------------------------------------------------------------------------

    def trigger(self, request: dict[str, Any]) -> Any:
        """Call a function and return its result (sync), ``None`` (``Void``) or the
        daemon's answer (``Enqueue``: ``{"messageReceiptId": ...}``).

        ``request``: ``function_id``, ``payload``, and optional ``action``,
        ``timeout_ms``, ``metadata``.

        Raises:
            InvocationError: the call failed; ``code`` says why (``function_not_found``,
                ``TIMEOUT``, ``invocation_stopped``, the handler's own code, ...).
            ValueError, TypeError: the request itself is malformed (nothing was sent).
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("trigger() would block the SDK loop; use "
                               "`await worker.trigger_async(...)` in async handlers")
        message, timeout_ms = self._prepare(request)
        if message.invocation_id is None:
            self._loop.call_soon_threadsafe(self._send_or_queue, message)
            return None
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(self._start_call, message, timeout_ms,
                                        _settler(result))
        return result.result()

    async def trigger_async(self, request: dict[str, Any]) -> Any:
        """:meth:`trigger` for async code; works from any event loop."""
        message, timeout_ms = self._prepare(request)
        on_sdk_loop = asyncio.get_running_loop() is self._loop
        if message.invocation_id is None:
            if on_sdk_loop:
                self._send_or_queue(message)
            else:
                self._loop.call_soon_threadsafe(self._send_or_queue, message)
            return None
        if on_sdk_loop:
            future: asyncio.Future[Any] = self._loop.create_future()
            self._start_call(message, timeout_ms, _settler(future))
            return await future
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(self._start_call, message, timeout_ms,
                                        _settler(result))
        return await asyncio.wrap_future(result)

    def _prepare(self, request: dict[str, Any]) -> tuple[p.InvokeFunction, int]:
        """Validate and encode a request in the caller's thread (errors raise there)."""
        if not isinstance(request, dict):
            raise TypeError("trigger() takes a dict with 'function_id' and 'payload'")
        function_id = request.get("function_id")
        if not isinstance(function_id, str) or not function_id:
            raise ValueError("function_id must be a non-empty string")
        explicit_timeout = request.get("timeout_ms")
        if explicit_timeout is not None and (
                not isinstance(explicit_timeout, int) or explicit_timeout <= 0):
            raise ValueError("timeout_ms must be a positive integer")
        action = action_to_wire(request.get("action"))
        metadata = request.get("metadata")
        void = action is not None and action.get("type") == "void"
        invocation_id = None
        if not void:
            invocation_id = f"{self._id_prefix}{next(self._seq):012x}"
        message = p.InvokeFunction(
            function_id=function_id,
            data=p.to_raw(request.get("payload")),
            invocation_id=invocation_id,
            action=action,
            timeout_ms=explicit_timeout,
            metadata=NULL if metadata is None else p.to_raw(metadata),
        )
        return message, explicit_timeout or self._options.invocation_timeout_ms

    def _send_or_queue(self, message: p.InvokeFunction) -> bool:
        if self._send(message):
            return True
        if self._running:
            self._outbox.append(message)
        return False

    def _start_call(self, message: p.InvokeFunction, timeout_ms: int,
                    settle: Callable[[Any, BaseException | None], None]) -> None:
        invocation_id = message.invocation_id
        assert invocation_id is not None
        if not self._running:
            settle(None, InvocationError(ErrorCode.INVOCATION_STOPPED,
                                         "the worker shut down", message.function_id))
            return
        pending = _Pending(function_id=message.function_id, settle=settle)
        pending.timer = self._loop.call_later(timeout_ms / 1000, self._timed_out,
                                              invocation_id, timeout_ms)
        self._pending[invocation_id] = pending
        pending.sent = self._send_or_queue(message)

    def _timed_out(self, invocation_id: str, timeout_ms: int) -> None:
        pending = self._pending.pop(invocation_id, None)
        if pending is not None:
            self._outbox = [m for m in self._outbox if m.invocation_id != invocation_id]
            pending.settle(None, InvocationError(
                ErrorCode.TIMEOUT, f"invocation timed out after {timeout_ms}ms",
                function_id=pending.function_id, invocation_id=invocation_id))

    def ping(self, timeout_s: float = 5.0) -> float:
        """Round trip to the daemon, in seconds.

        Also a barrier: the daemon handles a connection's frames in order, so when
        ``ping`` returns, every registration made before it is in effect.

        Raises:
            InvocationError: ``TIMEOUT`` or ``invocation_stopped`` (not connected).
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("ping() would block the SDK loop")
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        started = time.perf_counter()

        def send() -> None:
            if self._send(p.Ping()):
                self._pings.append(_settler(done))
            else:
                done.set_exception(InvocationError(ErrorCode.INVOCATION_STOPPED,
                                                   "not connected to the daemon"))

        self._loop.call_soon_threadsafe(send)
        try:
            done.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise InvocationError(ErrorCode.TIMEOUT,
                                  f"no pong within {timeout_s} s") from None
        return time.perf_counter() - started

    def _fail_pings(self, reason: str) -> None:
        while self._pings:
            self._pings.popleft()(None, InvocationError(ErrorCode.INVOCATION_STOPPED, reason))

    def _fail_pending(self, which: Callable[[_Pending], bool], reason: str) -> None:
        for invocation_id, pending in list(self._pending.items()):
            if which(pending):
                del self._pending[invocation_id]
                if pending.timer is not None:
                    pending.timer.cancel()
                pending.settle(None, InvocationError(
                    ErrorCode.INVOCATION_STOPPED, reason, function_id=pending.function_id,
                    invocation_id=invocation_id))


#: What the SDK does with each message the daemon sends (others are ignored).
_DISPATCH: dict[type, Callable[[III, Any], None]] = {
    p.InvocationResult: III._on_result,
    p.InvokeFunction: III._on_invoke,
    p.Pong: III._on_pong,
    p.WorkerRegistered: III._on_welcome,
    p.RegistrationRejected: III._on_rejected,
    p.RegisterTrigger: lambda sdk, message: sdk._provide(message, "register_trigger"),
    p.UnregisterTrigger: lambda sdk, message: sdk._provide(message, "unregister_trigger"),
    p.TriggerRegistrationResult: III._trigger_verdict,
    p.Error: III._on_error,
}


def _settler(future: asyncio.Future[Any] | concurrent.futures.Future[Any]
             ) -> Callable[[Any, BaseException | None], None]:
    """Completes ``future`` once; later outcomes (a late result after a timeout) are moot."""
    def settle(result: Any, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    return settle


def resolve_address(address: str | None = None) -> str:
    """The address to connect to: argument > ``III_URL`` > ``III_SOCKET`` > default socket."""
    if address:
        return address
    return os.environ.get("III_URL") or str(resolve_socket_path())


def register_worker(address: str | None = None, options: InitOptions | None = None) -> III:
    """Connect a worker to the daemon and return it.

    Waits up to ``options.connect_timeout_s`` for the first connection, then returns
    anyway and keeps retrying in the background (registrations and calls wait for it).
    """
    return _connected(III(resolve_address(address), options))


def connect(address: str | None = None, options: InitOptions | None = None) -> III:
    """Connect as a plain client (a script that calls, a watcher): the same API as
    :func:`register_worker`, but it does not introduce itself, so it is not listed in
    ``iii list workers`` unless it registers functions of its own."""
    return _connected(III(resolve_address(address), options, introduce=False))


def _connected(client: III) -> III:
    if not client.wait_until_connected(client._options.connect_timeout_s):
        log.warning("not connected to %s yet; retrying in the background", client._address)
    return client


__all__ = [
    "III",
    "FunctionRef",
    "InitOptions",
    "ReconnectionConfig",
    "Trigger",
    "TriggerConfig",
    "TriggerTypeRef",
    "connect",
    "register_worker",
]
