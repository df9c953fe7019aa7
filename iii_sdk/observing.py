"""Observers this client created (``III.observe``), replayed with the same id on every
reconnect until disposed, as in the official SDK 0.25.

An observer's state comes from the daemon: ``observeresult`` answers each ``observe``
(and each replay), ``observerstatechanged`` tells every later change. State listeners
run in order on a thread of their own, never on the SDK loop, so they may call the
sync API.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from iii_sdk import protocol as p
from iii_sdk.errors import ObserveRejection
from iii_sdk.session import Session

log = logging.getLogger("iii_sdk")

ObserverState = Literal["pending", "active", "suspended", "error", "disposed"]
_STATES = frozenset({"pending", "active", "suspended", "error", "disposed"})
#: ``listener(state, reason)``; ``reason`` is ``{code, message}`` or None.
StateListener = Callable[[ObserverState, "dict[str, str] | None"], None]


class ObserverHandle:
    """What :meth:`III.observe` returns, at once (also before the connection is up).

    Attributes:
        id: The observer's id, the same on every replay.
    """

    def __init__(self, observer_id: str, message: p.Observe, observing: Observing) -> None:
        self.id = observer_id
        self._message = message
        self._observing = observing
        self._state: ObserverState = "pending"
        self._reason: dict[str, str] | None = None
        self._changed = threading.Condition()
        self._listeners: list[StateListener] = []

    def __repr__(self) -> str:
        return f"ObserverHandle(id={self.id!r}, state={self._state!r})"

    @property
    def state(self) -> ObserverState:
        """``pending``, ``active``, ``suspended``, ``error`` or ``disposed``."""
        return self._state

    @property
    def reason(self) -> dict[str, str] | None:
        """Why it is in its state (``error``, ``suspended``, ``disposed``)."""
        return self._reason

    def _settled(self) -> bool:
        return self._state in ("active", "error", "disposed")

    def _raise_unless_active(self) -> None:
        if self._state == "active":
            return
        reason = self._reason or {"code": "UNOBSERVED",
                                  "message": f"observer {self.id} is {self._state}"}
        raise ObserveRejection(reason["code"], reason["message"])

    def ready(self, timeout: float | None = None) -> None:
        """Block until the observer is ``active``.

        Raises:
            ObserveRejection: it turned ``error`` or ``disposed`` first.
            TimeoutError: ``timeout`` seconds passed first.
            RuntimeError: called on the SDK loop (use :meth:`ready_async`).
        """
        if self._observing.session.on_sdk_thread():
            raise RuntimeError("ready() would block the SDK loop; use await ready_async()")
        with self._changed:
            if not self._changed.wait_for(self._settled, timeout):
                raise TimeoutError(f"observer {self.id} is still {self._state} after "
                                   f"{timeout} s")
        self._raise_unless_active()

    async def ready_async(self) -> None:
        """:meth:`ready` for async code, from any event loop."""
        if not self._settled():
            loop = asyncio.get_running_loop()
            settled: asyncio.Future[None] = loop.create_future()

            def settle() -> None:
                if not settled.done():
                    settled.set_result(None)

            def wake(_state: ObserverState, _reason: dict[str, str] | None) -> None:
                if self._settled():
                    loop.call_soon_threadsafe(settle)

            off = self.on_state_change(wake)
            try:
                if not self._settled():
                    await settled
            finally:
                off()
        self._raise_unless_active()

    def on_state_change(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener(state, reason)`` on every change, in order. Returns the
        function that stops it."""
        self._listeners.append(listener)

        def off() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return off

    def dispose(self) -> None:
        """Remove the observer (``unobserve``); it is not replayed any more."""
        if self._state == "disposed":
            return
        self._observing.dispose(self)
        self._set("disposed", {"code": "UNOBSERVED",
                               "message": "disposed by the observing worker"})

    async def dispose_async(self) -> None:
        self.dispose()

    def _set(self, state: str, reason: dict[str, str] | None) -> None:
        """A state from the daemon (an unknown one reads as ``pending``)."""
        known: ObserverState = state if state in _STATES else "pending"  # type: ignore[assignment]
        with self._changed:
            if self._state == "disposed" or (known, reason) == (self._state, self._reason):
                return
            self._state, self._reason = known, reason
            self._changed.notify_all()
        for listener in list(self._listeners):
            self._observing.tell(listener, known, reason)


class Observing:
    """The observers of one client, by id."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.handles: dict[str, ObserverHandle] = {}
        self._lock = threading.Lock()
        #: Observers disposed while disconnected, told to the daemon on the next connection.
        self._unsent: list[str] = []
        #: Runs state listeners in order, off the SDK loop (made on first use).
        self._listeners: concurrent.futures.ThreadPoolExecutor | None = None

    # --- in the caller's thread -------------------------------------------------------

    def add(self, source: dict[str, Any], target: str | dict[str, Any],
            options: dict[str, Any] | None) -> ObserverHandle:
        if not isinstance(source, dict):
            raise TypeError("observe: source must be a dict")
        function_id = source.get("function_id")
        if not isinstance(function_id, str) or not function_id.strip():
            raise ValueError("observe: source.function_id is required")
        target_ref = {"function_id": target} if isinstance(target, str) else target
        if not isinstance(target_ref, dict) or not isinstance(
                target_ref.get("function_id"), str) or not target_ref["function_id"].strip():
            raise ValueError("observe: target is required (the id of a registered function)")
        opts = options or {}
        observer_id = opts.get("id") or str(uuid.uuid4())
        if not isinstance(observer_id, str):
            raise TypeError("observe: options.id must be a string")
        try:
            message = p.Observe(
                id=observer_id,
                source=msgspec.convert(
                    {k: v for k, v in source.items() if v is not None}, p.ObserveSource),
                target=msgspec.convert(target_ref, p.ObserveTarget),
                metadata=opts.get("metadata"), max_fires=opts.get("max_fires"),
                expires_in_ms=opts.get("expires_in_ms"),
                max_in_flight=opts.get("max_in_flight"))
            p.encode(message)
        except (msgspec.ValidationError, msgspec.EncodeError, TypeError) as exc:
            raise TypeError(f"observe: {exc}") from None
        handle = ObserverHandle(observer_id, message, self)
        with self._lock:
            if observer_id in self.handles:
                raise ValueError(f"observe: observer id already in use: {observer_id}")
            self.handles[observer_id] = handle
        self.session.call_on_loop(lambda: self._send(message))
        return handle

    def dispose(self, handle: ObserverHandle) -> None:
        with self._lock:
            if self.handles.get(handle.id) is not handle:
                return
            del self.handles[handle.id]
        self.session.call_on_loop(lambda: self._unobserve(handle.id))

    # --- on the SDK loop --------------------------------------------------------------

    def _send(self, message: p.Message) -> None:
        self.session.send(message)  # not connected: the replay on connect sends it

    def _unobserve(self, observer_id: str) -> None:
        # Kept while disconnected: a reattaching connection takes the observer over.
        if not self.session.send(p.Unobserve(id=observer_id)):
            self._unsent.append(observer_id)

    def replay(self) -> None:
        """A new connection: every observer again, same id (after the functions)."""
        unsent, self._unsent = self._unsent, []
        for observer_id in unsent:
            self.session.send(p.Unobserve(id=observer_id))
        for handle in list(self.handles.values()):
            self.session.send(handle._message)

    def on_result(self, message: p.ObserveResult) -> None:
        if message.warnings:
            log.warning("observer %s: %s", message.id, "; ".join(message.warnings))
        self._changed(message.id, message.state, message.error)

    def on_changed(self, message: p.ObserverStateChanged) -> None:
        self._changed(message.id, message.state, message.reason)

    def _changed(self, observer_id: str, state: str, reason: p.ErrorBody | None) -> None:
        handle = self.handles.get(observer_id)
        if handle is None:
            return
        if state == "disposed":  # forgotten first: never replayed once seen disposed
            with self._lock:
                self.handles.pop(observer_id, None)
        handle._set(state, None if reason is None else
                    {"code": reason.code, "message": reason.message})

    def tell(self, listener: StateListener, state: ObserverState,
             reason: dict[str, str] | None) -> None:
        if self._listeners is None:
            self._listeners = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="iii-observer")

        def run() -> None:
            try:
                listener(state, reason)
            except Exception:
                log.exception("a state listener of an observer raised")

        self._listeners.submit(run)

    def close(self) -> None:
        if self._listeners is not None:
            self._listeners.shutdown(wait=False)
