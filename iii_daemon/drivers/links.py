"""What the hub and its parts deal with: a connection's transport (:class:`Link`), the
store writer (:class:`Writer`), and what the hub's parts need of the hub
(:class:`Carrier`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from iii_daemon.core.effects import Output, Persist

if TYPE_CHECKING:
    from iii_daemon.core.router import Router


class Writer(Protocol):
    """Where :class:`Persist` effects go (the store writer thread), a batch at a time."""

    def submit(self, persists: list[Persist]) -> None: ...

    def close(self) -> None: ...


class NoStore:
    """The writer of a hub without a store: every write fails, and says why."""

    def submit(self, persists: list[Persist]) -> None:
        for persist in persists:
            persist.failure, persist.done = "this daemon has no store", True

    def close(self) -> None:
        pass


class Link(Protocol):
    """What the hub needs from one connection's transport."""

    conn_id: int

    def write(self, data: bytes | bytearray) -> None: ...

    def write_buffer_size(self) -> int: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self, restarting: bool = False) -> None:
        """Close once buffered writes are out; ``restarting``: the daemon is stopping
        (a WebSocket peer is told 1012, service restart, so every SDK reconnects)."""

    def abort(self) -> None: ...


class Carrier(Protocol):
    """What the hub's parts (timers, HTTP, live events) need of the hub: the core, the
    loop, and the way out for what the core returns."""

    router: Router
    loop: asyncio.AbstractEventLoop

    def deliver(self, out: Output) -> int:
        """Carry out the core's effects (output is held until :meth:`flush`)."""

    def flush(self) -> None:
        """Write what is held, submit writes, and re-arm the timers."""

    def unsent(self, conn_id: int) -> int | None:
        """Bytes a connection holds unsent, None when it is gone."""

    def hold(self, conn_id: int, data: bytes | bytearray) -> None:
        """Add ``data`` to a connection's output, sent at the next flush."""

    def drained(self, conn_id: int) -> None:
        """Handle what a paused connection holds back, and read it again if it may."""
