"""The worker API: register functions, call functions, over one daemon connection.

Mirrors the official Python ``iii-sdk`` (``from iii import register_worker``) so a
worker moves between the two by changing one import. :class:`III` is the public face;
the work is split by job:

- :mod:`iii_sdk.session`: the thread, the loop, connecting, backoff, reattach;
- :mod:`iii_sdk.calls`: calls this client makes, their timeouts, pings;
- :mod:`iii_sdk.handlers`: running the user's handlers and providers;
- :mod:`iii_sdk.registrations`: what was registered, replayed on reconnect, verdicts.

Threading rule: everything that touches the connection or the pending-call table runs
on the SDK loop; public methods hand work to it with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import socket
import threading
from collections.abc import Callable
from typing import Any

from iii_sdk import protocol as p
from iii_sdk.calls import Calls
from iii_sdk.channel_ends import ChannelEnds
from iii_sdk.channels import Channel
from iii_sdk.foreground import serve_until_stopped
from iii_sdk.handlers import Handler, Handlers
from iii_sdk.handles import FunctionRef, Trigger, TriggerTypeRef
from iii_sdk.invocation_context import InvocationContext, current
from iii_sdk.observing import ObserverHandle, Observing
from iii_sdk.options import (
    DEFAULT_INVOCATION_TIMEOUT_MS,
    HttpInvocationConfig,
    InitOptions,
    ReconnectionConfig,
    TriggerConfig,
)
from iii_sdk.paths import resolve_socket_path
from iii_sdk.registrations import Registrations
from iii_sdk.session import STABLE_CONNECTION_S, Link, Session
from iii_sdk.version import __version__

log = logging.getLogger("iii_sdk")


class III:
    """A connection to the daemon that serves functions and calls functions."""

    def __init__(self, address: str, options: InitOptions | None = None, *,
                 introduce: bool = True) -> None:
        #: Whether this connection tells the daemon who it is (engine::workers::register),
        #: which lists it as a worker; a plain client (see :func:`connect`) does not.
        self._introduce = introduce
        self._options = options or InitOptions()
        self._session = Session(address, self._options, self._on_message,
                                self._on_connected, self._on_lost, self._gave_up)
        self._calls = Calls(self._session)
        self._channels = ChannelEnds(self._session, self._calls.call_async,
                                     self._options.headers)
        self._handlers = Handlers(self._session, self._channels.resolve)
        self._registrations = Registrations(self._session, self._calls)
        registrations = self._registrations
        self._observing = Observing(self._session)
        #: What the SDK does with each message the daemon sends (others are ignored).
        self._dispatch: dict[type, Callable[[Any], None]] = {
            p.InvocationResult: self._calls.on_result,
            p.InvokeFunction: lambda message: self._handlers.invoke(
                message, registrations.functions.get(message.function_id)),
            p.Pong: self._calls.on_pong,
            p.WorkerRegistered: self._session.welcome,
            p.RegistrationRejected: registrations.on_rejected,
            p.RegisterTrigger: lambda message: self._handlers.provide(
                message, registrations.trigger_types.get(message.trigger_type or ""),
                "register_trigger"),
            p.UnregisterTrigger: lambda message: self._handlers.provide(
                message, registrations.trigger_types.get(message.trigger_type or ""),
                "unregister_trigger"),
            p.TriggerRegistrationResult: registrations.on_trigger_verdict,
            p.Error: registrations.on_error,
            p.ObserveResult: self._observing.on_result,
            p.ObserverStateChanged: self._observing.on_changed,
        }
        #: Set by shutdown() (and by SIGTERM in run_forever()).
        self._stopped = threading.Event()
        self._session.start()

    # --- the session --------------------------------------------------------------------

    def _on_message(self, message: p.Message) -> None:
        handler = self._dispatch.get(type(message))
        if handler is not None:
            handler(message)

    def _on_connected(self, link: Link) -> None:
        self._registrations.replay(link)
        self._observing.replay()  # after the functions: a target among them is served
        self._calls.send_outbox(link)
        if self._introduce:
            link.send(p.InvokeFunction(function_id="engine::workers::register",
                                       data=p.to_raw(self._metadata()),
                                       action={"type": "void"}))

    def _on_lost(self) -> None:
        self._calls.connection_lost()

    def _gave_up(self) -> None:
        self._calls.fail(lambda pending: True, "cannot reach the daemon")

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

    @property
    def _address(self) -> str:
        return self._session.address

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def worker_id(self) -> str | None:
        """The id the daemon gave this connection (None before the first connection)."""
        return self._session.worker_id

    @property
    def connected(self) -> bool:
        return self._session.connected.is_set()

    def wait_until_connected(self, timeout: float | None = None) -> bool:
        return self._session.connected.wait(timeout)

    def shutdown(self) -> None:
        """Close the connection and stop the background thread; calls still waiting fail
        with ``invocation_stopped``. The instance cannot be used afterwards."""
        session = self._session
        self._stopped.set()
        if not session.thread.is_alive():
            return
        if session.on_sdk_thread():
            raise RuntimeError("shutdown() cannot run on the SDK loop; use shutdown_async()")
        future = asyncio.run_coroutine_threadsafe(self.shutdown_async(), session.loop)
        future.result(timeout=10)
        session.stop_thread()
        self._handlers.close()
        self._observing.close()

    async def shutdown_async(self) -> None:
        # Callers of calls still running hear it now, not when their timeouts fire.
        self._handlers.stop()
        await self._channels.release_all()
        await self._session.close_async()
        self._calls.stop("the worker shut down")
        await self._handlers.cancel_async()

    def run_forever(self, ready: Callable[[], object] | None = None) -> None:
        """Serve until Ctrl-C or SIGTERM (or :meth:`shutdown` from another thread), then
        shut down cleanly: what a worker script calls last. ``ready()``, if given, runs
        once Ctrl-C and SIGTERM are handled (say "ready" there: a supervisor that stops
        the worker right after never kills it mid-way).

        Shutting down takes at most a few seconds, whatever the handlers do: calls
        still running are answered ``worker_stopping`` and their threads are left to
        the process's exit. After SIGTERM it returns (the script exits 0); after Ctrl-C
        it raises ``SystemExit(130)``, the shell's code for an interrupt, without a
        traceback. A second Ctrl-C while it shuts down is ignored.

        Raises:
            SystemExit: 130, after Ctrl-C.
        """
        serve_until_stopped(self._stopped, self.shutdown, ready)

    def __enter__(self) -> III:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # --- registration -------------------------------------------------------------------

    def register_function(
        self,
        function_id: str,
        handler: Handler | HttpInvocationConfig,
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

        Given an :class:`~iii_sdk.options.HttpInvocationConfig` (or the official SDK's)
        instead, the daemon calls that URL for every call of ``function_id``; the
        function still goes with this connection.
        """
        return self._registrations.add_function(
            function_id, handler, description=description, metadata=metadata,
            request_format=request_format, response_format=response_format)

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
        return self._registrations.add_action_type(action_id, function_id, description)

    def register_trigger(self, trigger: dict[str, Any]) -> Trigger:
        """Bind a trigger: ``{"type", "function_id", "config"?, "metadata"?, "id"?}``.

        Sent without waiting; the returned handle's ``state`` / ``ready()`` tell the
        daemon's verdict. Replayed with the same id after a reconnect (unless refused),
        and removed by the daemon when this worker disconnects.
        """
        return self._registrations.add_trigger(trigger)

    def register_trigger_type(self, type_id: str, description: str, provider: Any
                              ) -> TriggerTypeRef:
        """Provide the trigger type ``type_id``.

        ``provider.register_trigger(cfg)`` / ``provider.unregister_trigger(cfg)`` (sync or
        async; ``cfg`` is a :class:`TriggerConfig`) are called for each binding of this
        type; raising in ``register_trigger`` refuses the binding. The provider fires a
        binding by calling ``cfg.function_id`` with :meth:`trigger`.
        """
        return self._registrations.add_trigger_type(type_id, description, provider)

    # --- observers ----------------------------------------------------------------------

    def observe(self, source: dict[str, Any], target: str | dict[str, Any],
                options: dict[str, Any] | None = None) -> ObserverHandle:
        """Observe a function: every call of ``source["function_id"]`` that passes
        ``source["filters"]`` calls ``target``, a registered function (observe.v1, as
        the official SDK's ``iii.observe``).

        Returns at once, also before the connection is up; the observer is replayed with
        the same id after every reconnect until disposed. A refusal (``INVALID_ARGS``,
        ``INVALID_FILTER``, ``FORBIDDEN``) shows up as state ``error`` and makes
        ``ready()`` raise :class:`~iii_sdk.errors.ObserveRejection`.

        Args:
            source: ``function_id``; ``filters`` (``{"input.amount": {"$gte": 500}}``);
                ``on``: ``success`` (default), ``error`` or ``complete``; ``capture``:
                what of the call the target gets (default input, output, caller);
                ``deliver``: ``envelope`` (default), ``input`` or ``output``.
            target: The function to call: its id, or ``{"function_id": ...}``. Until it
                is registered the observer stays ``pending``.
            options: ``id``, ``max_fires``, ``expires_in_ms``, ``max_in_flight``,
                ``metadata`` (the metadata every activation carries).

        Raises:
            ValueError: ``source["function_id"]`` or ``target`` missing, or the id in use.
            TypeError: source, target or options are not JSON.

        Examples:
            >>> iii.register_function("alerts::payment-failed", notify)
            >>> failures = iii.observe(
            ...     {"function_id": "payments::charge", "on": "error",
            ...      "filters": {"input.amount": {"$gte": 500}}},
            ...     "alerts::payment-failed", {"max_in_flight": 4})
            >>> failures.ready()
            >>> failures.dispose()
        """
        return self._observing.add(source, target, options)

    def current_invocation(self) -> InvocationContext | None:
        """The invocation the calling code runs in (function and invocation ids, caller,
        observe_depth, activation), or None outside any handler."""
        return current()

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
        return self._calls.call_blocking(request)

    async def trigger_async(self, request: dict[str, Any]) -> Any:
        """:meth:`trigger` for async code; works from any event loop."""
        return await self._calls.call_async(request)

    # --- channels -----------------------------------------------------------------------

    def create_channel(self, buffer_size: int | None = None) -> Channel:
        """A new channel (``engine::channels::create``): hand one ref to another
        function, use the other end here.

        Raises:
            InvocationError: the daemon cannot make one (its WebSocket listener is off).
        """
        return self._channels.pair(self.trigger(_channel_request(buffer_size)))

    async def create_channel_async(self, buffer_size: int | None = None) -> Channel:
        return self._channels.pair(await self.trigger_async(_channel_request(buffer_size)))

    def ping(self, timeout_s: float = 5.0) -> float:
        """Round trip to the daemon, in seconds.

        Also a barrier: the daemon handles a connection's frames in order, so when
        ``ping`` returns, every registration made before it is in effect.

        Waits for a connection first when there is none yet (within ``timeout_s``).

        Raises:
            InvocationError: ``TIMEOUT`` (no connection or no pong in time), or
                ``invocation_stopped`` (the link dropped meanwhile).
        """
        return self._calls.ping_blocking(timeout_s)


def _channel_request(buffer_size: int | None) -> dict[str, Any]:
    return {"function_id": "engine::channels::create",
            "payload": {} if buffer_size is None else {"buffer_size": buffer_size}}


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
    "DEFAULT_INVOCATION_TIMEOUT_MS",
    "III",
    "STABLE_CONNECTION_S",
    "FunctionRef",
    "InitOptions",
    "ReconnectionConfig",
    "Trigger",
    "TriggerConfig",
    "TriggerTypeRef",
    "connect",
    "register_worker",
]
