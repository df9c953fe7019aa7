"""What a ``register_*`` call returns: a handle whose state follows the daemon's verdict.

Registrations go out without waiting (as in the official SDK), so a refusal arrives
later; the handle makes it visible instead of a line on stderr. States:

- ``pending``: sent, no verdict yet (or re-sent after a reconnect, or, for a trigger of
  a worker-provided type, waiting for its provider);
- ``active``: in effect;
- ``error``: refused; ``error`` holds the :class:`RegistrationRefused`, and the SDK
  stops replaying it after reconnects.

``ready()`` blocks until the verdict, like the official SDK's observer ``ready()``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Literal

from iii_sdk.errors import RegistrationRefused

RegistrationState = Literal["pending", "active", "error"]


class Handle:
    """A registered function, trigger, trigger type or action type."""

    __slots__ = ("_changed", "_error", "_on_sdk_thread", "_state", "_unregister", "_waiters",
                 "id")

    def __init__(self, handle_id: str, unregister: Callable[[], None],
                 on_sdk_thread: Callable[[], bool]) -> None:
        self.id = handle_id
        self._unregister = unregister
        self._on_sdk_thread = on_sdk_thread
        self._state: RegistrationState = "pending"
        self._error: RegistrationRefused | None = None
        self._changed = threading.Condition()
        #: ``ready_async`` callers, each on its own loop.
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, state={self._state!r})"

    def unregister(self) -> None:
        self._unregister()

    @property
    def state(self) -> RegistrationState:
        return self._state

    @property
    def error(self) -> RegistrationRefused | None:
        """Why the daemon refused it (state ``error``), else None."""
        return self._error

    def ready(self, timeout: float | None = None) -> None:
        """Block until the daemon's verdict.

        Raises:
            RegistrationRefused: the daemon refused it.
            TimeoutError: still pending after ``timeout`` seconds.
            RuntimeError: called on the SDK's own loop (use :meth:`ready_async`).
        """
        if self._on_sdk_thread():
            raise RuntimeError("ready() would block the SDK loop; use await ready_async()")
        with self._changed:
            if not self._changed.wait_for(lambda: self._state != "pending", timeout):
                raise TimeoutError(f"{self.id!r} is still pending after {timeout} s")
        if self._error is not None:
            raise self._error

    async def ready_async(self) -> None:
        """:meth:`ready` for async code, from any event loop.

        Raises:
            RegistrationRefused: the daemon refused it.
        """
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[None] = loop.create_future()
        with self._changed:
            if self._state == "pending":
                self._waiters.append((loop, settled))
            else:
                settled.set_result(None)
        await settled
        if self._error is not None:
            raise self._error

    # --- set by the SDK loop ------------------------------------------------------------

    def _settle(self, error: RegistrationRefused | None) -> None:
        with self._changed:
            self._state, self._error = ("active", None) if error is None else ("error", error)
            self._changed.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, settled in waiters:
            loop.call_soon_threadsafe(_resolve, settled)

    def _confirm(self) -> None:
        """In effect, unless a refusal came first."""
        if self._state == "pending":
            self._settle(None)

    def _resend(self) -> None:
        """Sent again on a new connection: the daemon decides again."""
        with self._changed:
            self._state, self._error = "pending", None


def _resolve(settled: asyncio.Future[None]) -> None:
    if not settled.done():
        settled.set_result(None)


class Trigger(Handle):
    """A registered trigger; ``unregister()`` removes it."""

    __slots__ = ()


class TriggerTypeRef(Handle):
    """A provided trigger type; ``unregister()`` stops providing it."""

    __slots__ = ()


class FunctionRef(Handle):
    """A registered function (or action type); ``unregister()`` stops serving it."""

    __slots__ = ()
