"""The thin asyncio driver between transports and the router.

Every transport (Unix socket, WebSocket) hands the hub the frames it read; the hub
decodes them, runs the router and delivers what it returns. Writes are collected per
connection and flushed once per batch of input, so a pipelined caller costs one syscall
per read, not one per message.

Bounds, so that no client can make the daemon hold unbounded memory or stall others:

- *Output budget*: while handling a connection's frames, the hub stops once they have
  produced ``output_budget`` bytes of output (or after ``FRAMES_PER_TURN`` frames or
  ``TURN_BUDGET_S`` of work, to give the others a turn); the rest wait (the connection
  is not read) until its own unsent output drains. A few bytes of pipelined
  ``engine::functions::list`` calls cannot make gigabytes of answers.
- *Write limit*: a connection whose unsent output still grows past ``write_limit`` is
  not reading at all and is cut off.
- *Parked bytes*: bytes held for incomplete frames (unfinished lines, WebSocket messages
  still arriving) are counted across every connection; past ``parked_limit`` the
  connection holding the most is cut off.
- *Containment*: an exception while handling or delivering one message is logged with
  its traceback and answered as an error to that message; it never closes a connection.

Time: the core gets ``time.monotonic()`` (the loop's own clock may tick in whole
milliseconds, too coarse for call durations); the loop's timers follow it to within one.

Writes: a :class:`Persist` effect goes to the store writer at once; when the writer
says it landed, the hub hands it back to the core, which answers the call that wrote
(the core holds back whatever depends on the write; nothing else waits). While more
than ``writes_limit`` writes are in flight, the connection adding more is not read.

Queue deliveries (the router leaves pacing them to the hub) run after each turn's
input. A backlog is background work: while calls are being routed it drains a few
messages at a time with pauses between, and at full speed once they stop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from iii_daemon.core.effects import Close, Emit, HttpCall, HttpReply, Output, Persist
from iii_daemon.core.http_requests import HttpRequest
from iii_daemon.core.rbac import Grants
from iii_daemon.core.router import Router
from iii_daemon.drivers.hub_events import WATCH_BUFFER, LiveEvents
from iii_daemon.drivers.hub_http import HttpBridge
from iii_daemon.drivers.hub_timers import Deadlines, QueuePacer
from iii_daemon.drivers.hub_writes import WRITES_LIMIT, StoreWrites
from iii_daemon.drivers.links import Link, Writer
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode
from iii_sdk.errors import ProtocolError
from iii_sdk.framing import Oversized

log = logging.getLogger(__name__)

#: Output one batch of a connection's frames may produce before the hub stops reading it.
OUTPUT_BUDGET = 4 * 1024 * 1024
#: Frames of one connection handled in one go before the others get a turn.
FRAMES_PER_TURN = 512
#: ... or after this long (checked every 32 frames): frames that each cost more (a cron
#: firing's results) must not hold another client's call for a whole read of 512 (10 000
#: every-second crons: another client's p99 8.2 and 9.7 ms without, 6.1 and 7.0 with;
#: void and pipelined throughput unchanged within noise).
TURN_BUDGET_S = 0.002


class Hub:
    def __init__(self, router: Router, loop: asyncio.AbstractEventLoop, write_limit: int,
                 parked_limit: int = 256 * 1024 * 1024,
                 output_budget: int = OUTPUT_BUDGET, writer: Writer | None = None,
                 writes_limit: int = WRITES_LIMIT,
                 watch_buffer: int = WATCH_BUFFER) -> None:
        self.router = router
        self.loop = loop
        self.writes = StoreWrites(self, writer, writes_limit)
        #: A connection whose unsent output grows past this is cut off (it is not reading).
        self.write_limit = write_limit
        self.parked_limit = parked_limit
        self.output_budget = output_budget
        self.links: dict[int, Link] = {}
        self._next_id = 0
        self._out: dict[int, bytearray] = {}
        #: Frames read from a paused connection and not handled yet, in order.
        self._backlog: dict[int, collections.deque[bytes]] = {}
        #: Bytes each connection holds in incomplete frames; their sum.
        self._parked: dict[int, int] = {}
        self.parked_total = 0
        self.deadlines = Deadlines(self)
        self.queue_pacer = QueuePacer(self)
        self.http = HttpBridge(self)
        self.live = LiveEvents(self, watch_buffer)
        #: Who carries out the other driver commands, by type (``Spawn``: the managed
        #: workers' processes, ``SharedOp``: the shared backend), as the daemon set up.
        self.commands: dict[type, Callable[[Any], int | None]] = {}
        #: Called at each flush, before the connections' output goes out (the stream
        #: socket writes what a turn made for each client at once).
        self.flushers: list[Callable[[], None]] = []

    # --- links --------------------------------------------------------------------------

    def attach(self, link: Link, transport: str, process_group: int | None = None,
               grants: Grants | None = None) -> int:
        self._next_id += 1
        conn_id = self._next_id
        link.conn_id = conn_id
        self.links[conn_id] = link
        self.deliver(self.router.connect(conn_id, transport, time.time(), process_group,
                                         grants))
        self.flush()
        return conn_id

    def detach(self, conn_id: int) -> None:
        if self.links.pop(conn_id, None) is None:
            return
        self._out.pop(conn_id, None)
        self._backlog.pop(conn_id, None)
        self.parked_total -= self._parked.pop(conn_id, 0)
        try:
            self.deliver(self.router.disconnect(conn_id))
        except Exception:
            log.exception("error while removing connection %d", conn_id)
        self.flush()

    # --- input --------------------------------------------------------------------------

    def receive(self, conn_id: int, frames: Sequence[bytes]) -> None:
        """Handle a batch of frames from one connection, then write once.

        A connection over its output budget keeps the frames it could not handle yet
        and is not read until its output drains (see :meth:`drained`).
        """
        backlog = self._backlog.get(conn_id)
        if backlog is not None:  # still paused: keep the order
            backlog.extend(frames)
            return
        if conn_id not in self.links:
            return  # cut off; its transport has not noticed yet
        rest = self._handle(conn_id, frames)
        self.flush()
        if rest is not None:
            self._pause(conn_id, rest)

    def _handle(self, conn_id: int, frames: Sequence[bytes]) -> Sequence[bytes] | None:
        """Handle frames until they produced ``output_budget`` bytes; then return the
        frames not handled yet (maybe none): the connection must wait. None: all done
        within the budget."""
        router = self.router
        now = time.monotonic()
        decode = p.decode
        # What the connection has not sent yet counts against the budget too: one
        # message per batch (WebSocket) must not add up without end.
        produced = self.links[conn_id].write_buffer_size()
        budget = self.output_budget
        for index, frame in enumerate(frames):
            try:
                try:
                    message = decode(frame)
                except ProtocolError as exc:
                    out = router.bad_frame(conn_id, frame, str(exc))
                else:
                    out = router.handle(conn_id, message, now)
            except Exception:
                # A daemon bug must cost this one message, never the connection.
                log.exception("error while handling a frame from connection %d", conn_id)
                out = self._internal_error(conn_id, frame)
            if out:
                produced += self.deliver(out)
                if produced > budget or self.writes.full:
                    return frames[index + 1:] if conn_id in self.links else None
            if index & 31 == 31 and index + 1 < len(frames) and \
                    time.monotonic() - now > TURN_BUDGET_S:
                return frames[index + 1:] if conn_id in self.links else None
            if index + 1 == FRAMES_PER_TURN and len(frames) > FRAMES_PER_TURN:
                # Others get a turn: a pipelined burst (writes make no output to count)
                # must not hold every other connection for the whole read.
                return frames[index + 1:] if conn_id in self.links else None
        return None

    def _internal_error(self, conn_id: int, frame: bytes) -> Output:
        reason = "internal error while handling this frame (see the daemon log)"
        try:
            return self.router.bad_frame(conn_id, frame, reason)
        except Exception:  # not even the frame's id could be read back
            return [(conn_id, p.Error(code=ErrorCode.BAD_FRAME, message=reason))]

    def _pause(self, conn_id: int, rest: Sequence[bytes]) -> None:
        link = self.links.get(conn_id)
        if link is None:
            return
        self._backlog[conn_id] = collections.deque(rest)
        link.pause_reading()
        if self.writes.full:
            self.writes.wait(conn_id)  # woken when writes land
        elif link.write_buffer_size() <= self.output_budget:
            # Its own output is small (the budget went to others): let other
            # connections have a turn, then go on.
            self.loop.call_soon(self.drained, conn_id)

    def drained(self, conn_id: int) -> None:
        """The link's unsent output went down: handle what waited, then read again."""
        backlog = self._backlog.get(conn_id)
        link = self.links.get(conn_id)
        if link is None:
            return
        if backlog is None:
            link.resume_reading()
            return
        if link.write_buffer_size() > self.output_budget:
            return  # not yet; the transport tells us again when it drains
        if self.writes.full:
            self.writes.wait(conn_id)
            return  # not yet; the writes landing wake it
        del self._backlog[conn_id]
        rest = self._handle(conn_id, list(backlog))
        self.flush()
        if rest is not None:
            self._pause(conn_id, rest)
        elif conn_id in self.links:
            link.resume_reading()

    def http_request(self, make: Callable[[int], HttpRequest],
                     on_reply: Callable[[HttpReply], None]) -> int:
        """Hand an HTTP request to the core; see :meth:`HttpBridge.request`."""
        return self.http.request(make, on_reply)

    def http_gone(self, request_id: int) -> None:
        self.http.gone(request_id)

    def parked(self, conn_id: int, size: int) -> bool:
        """The link now holds ``size`` bytes of incomplete frames. False when the daemon
        is over its global limit and this connection was the largest holder (cut off)."""
        self.parked_total += size - self._parked.get(conn_id, 0)
        if size:
            self._parked[conn_id] = size
        else:
            self._parked.pop(conn_id, None)
        if self.parked_total <= self.parked_limit:
            return True
        hog = max(self._parked, key=self._parked.__getitem__)
        self._cut_off(hog, f"it holds {self._parked[hog]} bytes of unfinished frames while "
                           f"the daemon holds {self.parked_total} in all (limit "
                           f"{self.parked_limit})")
        return hog != conn_id

    def _cut_off(self, conn_id: int, why: str) -> None:
        """Abort a connection and forget it now (its transport notices later)."""
        link = self.links.get(conn_id)
        if link is None:
            return
        log.warning("closing connection %d: %s", conn_id, why)
        link.abort()
        self.detach(conn_id)

    def frame_error(self, conn_id: int, reason: str) -> None:
        """A frame the transport itself refused; the connection stays open."""
        self.deliver([(conn_id, p.Error(code=ErrorCode.BAD_FRAME, message=reason))])
        self.flush()

    def oversized(self, conn_id: int, lines: list[Oversized], limit: int) -> None:
        """Frames over the limit were dropped (but for their ends): the core fails the
        calls they belonged to; the connection stays."""
        if conn_id not in self.links:
            return
        now = time.monotonic()
        for line in lines:
            self.deliver(self.router.oversized_frame(conn_id, line.head, line.tail,
                                                     line.size, limit, now))
        self.flush()

    # --- output -------------------------------------------------------------------------

    def deliver(self, out: Output) -> int:
        """Encode messages into their connections' pending output and send writes to
        the store writer; return the bytes of output added."""
        added = 0
        for conn_id, message in out:
            if type(message) is Persist:
                self.writes.add(message)
            else:
                added += self._put(conn_id, message)
        return added

    def _put(self, conn_id: int, message: object) -> int:
        """Carry out one effect now; return the bytes of output it added."""
        if not isinstance(message, p.Message):  # a command, not a frame (the rarer)
            return self._command(conn_id, message)
        if conn_id not in self.links:
            return 0  # gone already; whatever was meant for it is moot
        buf = self._out.get(conn_id)
        if buf is None:
            buf = self._out[conn_id] = bytearray()
        size = len(buf)
        try:
            p.encode_into(message, buf)
        except Exception:
            del buf[size:]
            log.exception("cannot encode a %s for connection %d; dropped",
                          type(message).__name__, conn_id)
            return 0
        return len(buf) - size

    def _command(self, conn_id: int, message: object) -> int:
        """Carry out a command; return the bytes of output it queued (which count
        against the budget of the connection whose frames made it)."""
        if isinstance(message, Emit):
            if message.to is None:
                self.live.add(message)
            else:
                self.live.replay(message)
        elif isinstance(message, HttpReply):
            self.http.reply(message)
        elif isinstance(message, HttpCall):
            self.http.call(message)
        elif isinstance(message, Close):
            if conn_id in self.links:
                self._flush_one(conn_id)
                link = self.links.get(conn_id)
                if link is not None:
                    link.close()
        else:
            command = self.commands.get(type(message))
            if command is not None:  # managed workers' processes, the shared backend
                return command(message) or 0
        return 0

    def unsent(self, conn_id: int) -> int | None:
        """What a connection holds unsent (its transport's and ours), None if gone."""
        link = self.links.get(conn_id)
        if link is None:
            return None
        return link.write_buffer_size() + len(self._out.get(conn_id, b""))

    def hold(self, conn_id: int, data: bytes | bytearray) -> None:
        self._out.setdefault(conn_id, bytearray()).extend(data)

    def flush(self) -> None:
        for flusher in self.flushers:
            flusher()
        if self._out:
            for conn_id in list(self._out):
                self._flush_one(conn_id)
        self.writes.submit()
        self.queue_pacer.schedule()
        self.deadlines.schedule()

    def _flush_one(self, conn_id: int) -> None:
        buf = self._out.pop(conn_id, None)
        link = self.links.get(conn_id)
        if buf is None or link is None:
            return
        try:
            link.write(buf)
        except Exception:
            log.exception("writing to connection %d failed", conn_id)
            self._cut_off(conn_id, "writing to it failed")
            return
        if link.write_buffer_size() > self.write_limit:
            self._cut_off(conn_id, "it is not reading its messages")

    # --- shutdown -----------------------------------------------------------------------

    async def close_http_caller(self) -> None:
        await self.http.close()

    def shutdown(self) -> None:
        """Answer everyone still waiting, then close every link (buffered writes go out)."""
        self.deadlines.cancel()
        self.queue_pacer.cancel()
        self.live.cancel()
        self.writes.close()
        self.deliver(self.router.shutdown())
        self.flush()
        for link in list(self.links.values()):
            link.close(restarting=True)
