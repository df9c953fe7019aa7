"""Calls this client makes: ids, the table of calls waiting for answers, local
timeouts, the outbox of calls made while disconnected, and pings.

Runs on the SDK loop (see :mod:`iii_sdk.session`), except :meth:`Calls.prepare`,
which validates and encodes a request in the caller's thread so that its errors
raise there.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iii_sdk import protocol as p
from iii_sdk.actions import action_to_wire
from iii_sdk.error_codes import ErrorCode
from iii_sdk.errors import InvocationError
from iii_sdk.invocation_context import outgoing
from iii_sdk.protocol import NULL
from iii_sdk.session import Link, Session

#: Completes a call once: ``settle(result, exception)``.
Settle = Callable[[Any, BaseException | None], None]


@dataclass(slots=True, eq=False)
class _Pending:
    function_id: str
    settle: Settle
    timer: asyncio.TimerHandle | None = None
    sent: bool = False


def settler(future: asyncio.Future[Any] | concurrent.futures.Future[Any]) -> Settle:
    """Completes ``future`` once; later outcomes (a late result after a timeout) are moot."""
    def settle(result: Any, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    return settle


def wire_error(error: Any, function_id: str | None, invocation_id: str | None
               ) -> InvocationError:
    """The error of an invocationresult as the exception the caller gets."""
    body = p.error_body(error, "UNKNOWN")
    return InvocationError(body.code, body.message, function_id=function_id,
                           stacktrace=body.stacktrace, invocation_id=invocation_id)


class Calls:
    def __init__(self, session: Session) -> None:
        self._session = session
        self._pending: dict[str, _Pending] = {}
        #: Calls made while disconnected, sent on the next connection.
        self.outbox: list[p.InvokeFunction] = []
        self._seq = itertools.count(1)  # next() is atomic: trigger() runs on any thread
        # UUID-shaped ids (engines may parse them) for the price of a counter.
        self._id_prefix = str(uuid.uuid4())[:24]
        #: What each ping sent waits for, in order (pongs come back in order).
        self._pings: collections.deque[Settle] = collections.deque()

    # --- in the caller's thread -------------------------------------------------------

    def prepare(self, request: dict[str, Any]) -> tuple[p.InvokeFunction, int]:
        """Validate and encode a request; return it with its local timeout.

        Raises:
            ValueError, TypeError: the request is malformed.
        """
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
        caller, depth = outgoing()  # from inside a handler: who calls, observe hops
        message = p.InvokeFunction(
            function_id=function_id,
            data=p.to_raw(request.get("payload")),
            invocation_id=invocation_id,
            action=action,
            timeout_ms=explicit_timeout,
            metadata=NULL if metadata is None else p.to_raw(metadata),
            caller=caller,
            observe_depth=depth,
        )
        return message, explicit_timeout or self._session.options.invocation_timeout_ms

    # --- on the SDK loop ----------------------------------------------------------------

    # --- from the caller's thread or loop -------------------------------------------------

    def call_blocking(self, request: dict[str, Any]) -> Any:
        """A call from a plain thread: waits for its result (``None`` for a void call).

        Raises:
            RuntimeError: on the SDK loop, where waiting would block it.
            InvocationError, ValueError, TypeError: see ``III.trigger``.
        """
        session = self._session
        if session.on_sdk_thread():
            raise RuntimeError("trigger() would block the SDK loop; use "
                               "`await worker.trigger_async(...)` in async handlers")
        message, timeout_ms = self.prepare(request)
        if message.invocation_id is None:
            session.loop.call_soon_threadsafe(self.send_or_queue, message)
            return None
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        session.loop.call_soon_threadsafe(self.start, message, timeout_ms, settler(result))
        return result.result()

    async def call_async(self, request: dict[str, Any]) -> Any:
        """A call from any event loop, the SDK's own included."""
        loop = self._session.loop
        message, timeout_ms = self.prepare(request)
        on_sdk_loop = asyncio.get_running_loop() is loop
        if message.invocation_id is None:
            if on_sdk_loop:
                self.send_or_queue(message)
            else:
                loop.call_soon_threadsafe(self.send_or_queue, message)
            return None
        if on_sdk_loop:
            future: asyncio.Future[Any] = loop.create_future()
            self.start(message, timeout_ms, settler(future))
            return await future
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        loop.call_soon_threadsafe(self.start, message, timeout_ms, settler(result))
        return await asyncio.wrap_future(result)

    def ping_blocking(self, timeout_s: float) -> float:
        """A ping from a plain thread, waiting for a connection first; its round trip.

        Raises:
            RuntimeError: on the SDK loop. InvocationError: ``TIMEOUT``.
        """
        session = self._session
        if session.on_sdk_thread():
            raise RuntimeError("ping() would block the SDK loop")
        started = time.perf_counter()
        # Not connected yet (the daemon is starting, or being restarted): wait for it
        # within the same time budget rather than fail at once.
        if not session.connected.wait(timeout_s):
            raise InvocationError(ErrorCode.TIMEOUT, f"not connected to the daemon at "
                                                     f"{session.address} within {timeout_s} s")
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        session.loop.call_soon_threadsafe(self.ping, settler(done))
        try:
            done.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise InvocationError(ErrorCode.TIMEOUT,
                                  f"no pong within {timeout_s} s") from None
        return time.perf_counter() - started

    # --- on the SDK loop ---------------------------------------------------------------

    def send_or_queue(self, message: p.InvokeFunction) -> bool:
        if self._session.send(message):
            return True
        if self._session.running:
            self.outbox.append(message)
        return False

    def start(self, message: p.InvokeFunction, timeout_ms: int, settle: Settle) -> None:
        invocation_id = message.invocation_id
        assert invocation_id is not None
        if not self._session.running:
            settle(None, InvocationError(ErrorCode.INVOCATION_STOPPED,
                                         "the worker shut down", message.function_id))
            return
        pending = _Pending(function_id=message.function_id, settle=settle)
        pending.timer = self._session.loop.call_later(timeout_ms / 1000, self._timed_out,
                                                      invocation_id, timeout_ms)
        self._pending[invocation_id] = pending
        pending.sent = self.send_or_queue(message)

    def _timed_out(self, invocation_id: str, timeout_ms: int) -> None:
        pending = self._pending.pop(invocation_id, None)
        if pending is not None:
            self.outbox = [m for m in self.outbox if m.invocation_id != invocation_id]
            pending.settle(None, InvocationError(
                ErrorCode.TIMEOUT,
                f"invocation of '{pending.function_id}' timed out after {timeout_ms} ms",
                function_id=pending.function_id, invocation_id=invocation_id))

    def on_result(self, message: p.InvocationResult) -> None:
        pending = self._pending.pop(message.invocation_id, None)
        if pending is None:
            return  # timed out locally already
        if pending.timer is not None:
            pending.timer.cancel()
        if message.error is not None:
            pending.settle(None, wire_error(message.error, pending.function_id,
                                            message.invocation_id))
        else:
            pending.settle(p.from_raw(message.result), None)

    def send_outbox(self, link: Link) -> None:
        """A new connection: send the calls that waited for one (and still wait)."""
        outbox, self.outbox = self.outbox, []
        for message in outbox:
            pending = self._pending.get(message.invocation_id or "")
            if message.invocation_id is None or pending is not None:
                link.send(message)
                if pending is not None:
                    pending.sent = True

    def ping(self, settle: Settle) -> None:
        """Send a ping; ``settle`` runs when its pong arrives (or the link drops)."""
        if self._session.send(p.Ping()):
            self._pings.append(settle)
        else:
            settle(None, InvocationError(ErrorCode.INVOCATION_STOPPED,
                                         "not connected to the daemon"))

    def on_pong(self, message: p.Pong) -> None:
        if self._pings:
            self._pings.popleft()(None, None)

    def connection_lost(self) -> None:
        """Calls already sent can no longer be answered; calls not yet sent wait."""
        reason = "the connection to the daemon was lost"
        self._fail_pings(reason)
        self.fail(lambda pending: pending.sent, reason)

    def stop(self, reason: str) -> None:
        """Fail everything still waiting."""
        self.fail(lambda pending: True, reason)
        self._fail_pings(reason)

    def _fail_pings(self, reason: str) -> None:
        while self._pings:
            self._pings.popleft()(None, InvocationError(ErrorCode.INVOCATION_STOPPED, reason))

    def fail(self, which: Callable[[_Pending], bool], reason: str) -> None:
        for invocation_id, pending in list(self._pending.items()):
            if which(pending):
                del self._pending[invocation_id]
                if pending.timer is not None:
                    pending.timer.cancel()
                pending.settle(None, InvocationError(
                    ErrorCode.INVOCATION_STOPPED, reason, function_id=pending.function_id,
                    invocation_id=invocation_id))
