"""The thin asyncio driver between transports and the router.

Every transport (Unix socket, later WebSocket) hands the hub decoded messages; the hub
runs the router and delivers what it returns. Writes are collected per connection and
flushed once per batch of input, so a pipelined caller costs one syscall per read, not
one per message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from iii_daemon.router import Close, Output, Router
from iii_sdk import protocol as p
from iii_sdk.errors import ProtocolError

log = logging.getLogger(__name__)


class Link(Protocol):
    """What the hub needs from one connection's transport."""

    conn_id: int

    def write(self, data: bytes | bytearray) -> None: ...

    def write_buffer_size(self) -> int: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class Hub:
    def __init__(self, router: Router, loop: asyncio.AbstractEventLoop,
                 write_limit: int) -> None:
        self.router = router
        self.loop = loop
        #: A connection whose unsent output grows past this is cut off (it is not reading).
        self.write_limit = write_limit
        self.links: dict[int, Link] = {}
        self._next_id = 0
        self._out: dict[int, bytearray] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    # --- links --------------------------------------------------------------------------

    def attach(self, link: Link, transport: str) -> int:
        self._next_id += 1
        conn_id = self._next_id
        link.conn_id = conn_id
        self.links[conn_id] = link
        self.deliver(self.router.connect(conn_id, transport, time.time()))
        self.flush()
        return conn_id

    def detach(self, conn_id: int) -> None:
        if self.links.pop(conn_id, None) is None:
            return
        self._out.pop(conn_id, None)
        self.deliver(self.router.disconnect(conn_id))
        self.flush()

    # --- input --------------------------------------------------------------------------

    def receive(self, conn_id: int, frames: list[bytes]) -> None:
        """Decode and handle a batch of frames from one connection, then write once."""
        router = self.router
        now = self.loop.time()
        decode = p.decode
        for frame in frames:
            try:
                message = decode(frame)
            except ProtocolError as exc:
                out = router.bad_frame(conn_id, frame, str(exc))
            else:
                out = router.handle(conn_id, message, now)
            if out:
                self.deliver(out)
        self.flush()

    def frame_error(self, conn_id: int, reason: str) -> None:
        """A frame the transport itself refused; the connection stays open."""
        self.deliver([(conn_id, p.Error(code=p.ErrorCode.BAD_FRAME, message=reason))])
        self.flush()

    def frame_too_large(self, conn_id: int, reason: str) -> None:
        self.deliver([(conn_id, p.Error(code=p.ErrorCode.BAD_FRAME, message=reason)),
                      (conn_id, Close(reason))])
        self.flush()

    # --- output -------------------------------------------------------------------------

    def deliver(self, out: Output) -> None:
        pending = self._out
        for conn_id, message in out:
            if conn_id not in self.links:
                continue  # gone already; whatever was meant for it is moot
            if isinstance(message, Close):
                self._flush_one(conn_id)
                link = self.links.get(conn_id)
                if link is not None:
                    link.close()
                continue
            buf = pending.get(conn_id)
            if buf is None:
                buf = pending[conn_id] = bytearray()
            p.encode_into(message, buf)

    def flush(self) -> None:
        if self._out:
            for conn_id in list(self._out):
                self._flush_one(conn_id)
        self._schedule_timer()

    def _flush_one(self, conn_id: int) -> None:
        buf = self._out.pop(conn_id, None)
        link = self.links.get(conn_id)
        if buf is None or link is None:
            return
        link.write(buf)
        if link.write_buffer_size() > self.write_limit:
            log.warning("connection %d is not reading its messages; closing it", conn_id)
            link.abort()

    # --- time ---------------------------------------------------------------------------

    def _schedule_timer(self) -> None:
        deadline = self.router.next_deadline()
        if deadline is None or (self._timer_at is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.loop.time()
        self.router.tick_clock(now, time.time())  # cron follows the wall clock
        self.deliver(self.router.expire(now))
        self.flush()

    # --- shutdown -----------------------------------------------------------------------

    def shutdown(self) -> None:
        """Answer everyone still waiting, then close every link (buffered writes go out)."""
        if self._timer is not None:
            self._timer.cancel()
        self.deliver(self.router.shutdown())
        self.flush()
        for link in list(self.links.values()):
            link.close()
