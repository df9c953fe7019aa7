"""The thin asyncio driver between transports and the router.

Every transport (Unix socket, WebSocket) hands the hub the frames it read; the hub
decodes them, runs the router and delivers what it returns. Writes are collected per
connection and flushed once per batch of input, so a pipelined caller costs one syscall
per read, not one per message.

Bounds, so that no client can make the daemon hold unbounded memory or stall others:

- *Output budget*: while handling a connection's frames, the hub stops once they have
  produced ``output_budget`` bytes of output (or after ``FRAMES_PER_TURN`` frames, to
  give the others a turn); the rest wait (the connection is not read)
  until its own unsent output drains. A few bytes of pipelined ``engine::functions::list``
  calls cannot make gigabytes of answers.
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
from typing import TYPE_CHECKING, Protocol

from iii_daemon.core.effects import EVENTS, Close, Emit, HttpCall, HttpReply, Output, Persist
from iii_daemon.core.http_requests import HttpRequest
from iii_daemon.core.router import Router
from iii_daemon.core.watchers import fan_out
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode
from iii_sdk.errors import ProtocolError
from iii_sdk.framing import Oversized

if TYPE_CHECKING:
    from iii_daemon.drivers.http_caller import HttpCaller

log = logging.getLogger(__name__)

#: Output one batch of a connection's frames may produce before the hub stops reading it.
OUTPUT_BUDGET = 4 * 1024 * 1024
#: The longest the hub's timer sleeps; far deadlines are re-armed (loops reject huge delays).
MAX_TIMER_S = 3600.0
#: Frames of one connection handled in one go before the others get a turn.
FRAMES_PER_TURN = 512
#: Writes in flight before the hub stops reading the connection that adds more.
WRITES_LIMIT = 20_000
#: Unsent event bytes a watcher may hold; past that its events are dropped and counted.
WATCH_BUFFER = 1024 * 1024
#: How often live events go out to watchers (together).
WATCH_FLUSH_S = 0.05
#: Live events held for watchers before a fan-out is brought forward.
LIVE_BATCH = 4096
#: While calls are being routed (one came within ``BUSY_WINDOW_S``), queue deliveries go
#: ``QUEUE_SHARE`` at a time, a pause of ``QUEUE_YIELD_S`` between (at most 4 000/s):
#: a draining backlog then leaves the callers and their workers the CPU (see
#: benchmarks/queues.py: sync calls keep about 0.8x their pace; without it, 0.4x).
QUEUE_SHARE = 8
QUEUE_YIELD_S = 0.002
BUSY_WINDOW_S = 0.02


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


class Hub:
    def __init__(self, router: Router, loop: asyncio.AbstractEventLoop, write_limit: int,
                 parked_limit: int = 256 * 1024 * 1024,
                 output_budget: int = OUTPUT_BUDGET, writer: Writer | None = None,
                 writes_limit: int = WRITES_LIMIT,
                 watch_buffer: int = WATCH_BUFFER) -> None:
        self.router = router
        self.loop = loop
        self.writer: Writer = writer if writer is not None else NoStore()
        #: Writes not handed back to the core yet, oldest first.
        self._writes: collections.deque[Persist] = collections.deque()
        #: Writes made since the last flush: submitted together (one wake-up of the
        #: writer thread per batch of input, not one per write).
        self._unsubmitted: list[Persist] = []
        self.writes_limit = writes_limit
        #: Unsent bytes a watcher may hold before events for it are dropped (counted).
        self.watch_buffer = watch_buffer
        #: Live events since the last fan-out (every WATCH_FLUSH_S, after the answers
        #: of the calls that made them).
        self._live: list[Emit] = []
        self._live_handle: asyncio.Handle | None = None
        #: Connections not read until fewer writes are in flight.
        self._waiting_for_store: set[int] = set()
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
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        #: After a failing timer callback, wait at least this long before the next one.
        self._timer_floor = 0.0
        #: The next queue deliveries, when the router leaves pacing them to the hub.
        self._pump: asyncio.Handle | None = None
        #: HTTP requests waiting for their reply, by request id.
        self._http: dict[int, Callable[[HttpReply], None]] = {}
        #: Sends the requests of HTTP-invoked functions; made (and aiohttp's client
        #: imported, a tenth of a second) by the first one.
        self._http_caller: HttpCaller | None = None
        self._next_http = 0
        #: ``router.calls_routed`` when last looked at, and when it last moved.
        self._calls_seen = 0
        self._last_call_at = -1e9

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
                if produced > budget or len(self._writes) > self.writes_limit:
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
        if len(self._writes) > self.writes_limit:
            self._waiting_for_store.add(conn_id)  # woken by landed()
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
        if len(self._writes) > self.writes_limit:
            self._waiting_for_store.add(conn_id)
            return  # not yet; landed() wakes it
        del self._backlog[conn_id]
        rest = self._handle(conn_id, list(backlog))
        self.flush()
        if rest is not None:
            self._pause(conn_id, rest)
        elif conn_id in self.links:
            link.resume_reading()

    def http_request(self, make: Callable[[int], HttpRequest],
                     on_reply: Callable[[HttpReply], None]) -> int:
        """Hand an HTTP request to the core; ``on_reply`` gets its answer (now or
        later). Returns the request's id (for :meth:`http_gone`)."""
        self._next_http += 1
        request_id = self._next_http
        self._http[request_id] = on_reply
        try:
            out = self.router.http_request(make(request_id), time.monotonic())
        except Exception:
            log.exception("error while handling an http request")
            out = [(EVENTS, HttpReply(request_id, 500, {"error": "internal error while "
                                                            "handling this request (see "
                                                            "the daemon log)"}))]
        self.deliver(out)
        self.flush()
        return request_id

    def _http_answered(self, invocation_id: str, result: bytes | None,
                       error: dict[str, str] | None) -> None:
        """An HTTP-invoked function's request ended: the core answers its caller."""
        try:
            self.deliver(self.router.http_answered(invocation_id, result, error,
                                                   time.monotonic()))
        except Exception:
            log.exception("error after an http function answered; the hub goes on")
        self.flush()

    def http_gone(self, request_id: int) -> None:
        """Its client went away: a reply that comes later is dropped."""
        self._http.pop(request_id, None)

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
                self._unsubmitted.append(message)
                self._writes.append(message)
            else:
                added += self._put(conn_id, message)
        return added

    def _put(self, conn_id: int, message: object) -> int:
        """Carry out one effect now; return the bytes of output it added."""
        if isinstance(message, Emit):
            if message.to is None:
                # After this turn's answers: callers wait for no watcher.
                # Fanned out every WATCH_FLUSH_S, not per turn: per call that would
                # cost a loop callback and each watcher's setup (measured: 18 us a
                # call with two watchers), and the callers pay it.
                self._live.append(message)
                if self._live_handle is None:
                    self._live_handle = self.loop.call_later(WATCH_FLUSH_S,
                                                             self._fan_out_live)
                elif len(self._live) >= LIVE_BATCH:  # a flood: no more than this held
                    self._live_handle.cancel()
                    self._live_handle = self.loop.call_soon(self._fan_out_live)
            else:
                self._replay(message)
            return 0
        if isinstance(message, HttpReply):
            waiting = self._http.pop(message.request_id, None)
            if waiting is not None:  # else the client went away meanwhile
                waiting(message)
            return 0
        if isinstance(message, HttpCall):
            if self._http_caller is None:
                from iii_daemon.drivers.http_caller import HttpCaller
                self._http_caller = HttpCaller()
            self._http_caller.start(message, self._http_answered)
            return 0
        if conn_id not in self.links:
            return 0  # gone already; whatever was meant for it is moot
        if isinstance(message, Close):
            self._flush_one(conn_id)
            link = self.links.get(conn_id)
            if link is not None:
                link.close()
            return 0
        buf = self._out.get(conn_id)
        if buf is None:
            buf = self._out[conn_id] = bytearray()
        size = len(buf)
        try:
            p.encode_into(message, buf)  # type: ignore[arg-type]
        except Exception:
            del buf[size:]
            log.exception("cannot encode a %s for connection %d; dropped",
                          type(message).__name__, conn_id)
            return 0
        return len(buf) - size

    def _fan_out_live(self) -> None:
        """Send the live events since the last fan-out to their watchers (what each
        gets is the core's to decide: :func:`~iii_daemon.core.watchers.fan_out`), behind
        whatever their connections have queued already (a replay). They go out together
        every ``WATCH_FLUSH_S``: a watcher is woken a few times a second, not once per
        call (on a small machine every wake-up costs the callers)."""
        self._live_handle = None
        live, self._live = self._live, []
        # Dicts, or Finished (its frame made without one): see event_log.
        shares = fan_out(self.router.watchers, [emit.event for emit in live], self._unsent,
                         self.watch_buffer, time.monotonic())
        for conn_id, share in shares.items():
            self._out.setdefault(conn_id, bytearray()).extend(share)
        if shares:
            self.flush()

    def _unsent(self, conn_id: int) -> int | None:
        """What a connection holds unsent (its transport's and ours), None if gone."""
        link = self.links.get(conn_id)
        if link is None:
            return None
        return link.write_buffer_size() + len(self._out.get(conn_id, b""))

    def _replay(self, emit: Emit) -> None:
        """An event for one watcher (its replay): now, behind what waited for it."""
        conn_id = emit.to
        watcher = None if conn_id is None else self.router.watchers.get(conn_id)
        if conn_id is None or watcher is None or conn_id not in self.links:
            return
        self._out.setdefault(conn_id, bytearray()).extend(watcher.replay(emit.as_dict()))

    def landed(self) -> None:
        """The store writer finished a batch: hand the writes that landed back to the
        core, in the order they were made, and deliver what that produces."""
        writes = self._writes
        now = time.monotonic()
        while writes and writes[0].done:
            persist = writes.popleft()
            try:
                self.deliver(self.router.persisted(persist, now))
            except Exception:
                log.exception("error after a store write; the hub goes on")
        self.flush()
        if len(writes) <= self.writes_limit and self._waiting_for_store:
            waiting, self._waiting_for_store = self._waiting_for_store, set()
            for conn_id in waiting:
                self.drained(conn_id)

    def flush(self) -> None:
        if self._out:
            for conn_id in list(self._out):
                self._flush_one(conn_id)
        if self._unsubmitted:
            batch, self._unsubmitted = self._unsubmitted, []
            self.writer.submit(batch)
            if batch[-1].done:  # refused at once (no store, shutting down)
                self.loop.call_soon(self.landed)
        if self._pump is None and self.router.queues.dirty and self.router.paced_queues:
            self._schedule_pump()
        self._schedule_timer()

    # --- queue deliveries -----------------------------------------------------------------

    def _schedule_pump(self) -> None:
        """Queue deliveries run after the input of this turn. While calls keep arriving
        they take a small share: a few deliveries, then a pause that leaves the CPU to
        the callers and the workers serving them (a backlog is background work)."""
        if self._calls_busy():
            self._pump = self.loop.call_later(QUEUE_YIELD_S, self._pump_queues)
        else:
            self._pump = self.loop.call_soon(self._pump_queues)

    def _calls_busy(self) -> bool:
        """Calls arrived within the last ``BUSY_WINDOW_S``."""
        now = self.loop.time()
        if self._calls_seen != self.router.calls_routed:
            self._calls_seen = self.router.calls_routed
            self._last_call_at = now
        return now - self._last_call_at < BUSY_WINDOW_S

    def _pump_queues(self) -> None:
        self._pump = None
        try:
            self.deliver(self.router.pump_queues(
                time.monotonic(), QUEUE_SHARE if self._calls_busy() else None))
        except Exception:
            log.exception("error while delivering queued messages; the hub goes on")
        self.flush()

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

    # --- time ---------------------------------------------------------------------------

    def _schedule_timer(self) -> None:
        deadline = self.router.next_deadline()
        if deadline is None or (self._timer_at is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        now = self.loop.time()
        self._timer_at = min(max(deadline, self._timer_floor), now + MAX_TIMER_S)
        self._timer = self.loop.call_at(self._timer_at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = time.monotonic()
        try:
            self.router.tick_clock(now, time.time())  # cron follows the wall clock
            self.deliver(self.router.expire(now))
        except Exception:
            # Never let one bad deadline stop the timer: timeouts and crons depend on it.
            # A floor keeps a deadline that fails every time from spinning the loop.
            log.exception("error while handling deadlines; the timer goes on")
            self._timer_floor = now + 0.1
        self.flush()

    # --- shutdown -----------------------------------------------------------------------

    async def close_http_caller(self) -> None:
        """Stop the requests of HTTP-invoked functions still running, if any ran."""
        if self._http_caller is not None:
            await self._http_caller.close()

    def shutdown(self) -> None:
        """Answer everyone still waiting, then close every link (buffered writes go out)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._pump is not None:
            self._pump.cancel()
        if self._live_handle is not None:
            self._live_handle.cancel()
        # What is queued commits (writes made from now on fail and say so), and the
        # calls that wrote get their answers.
        self.writer.close()
        while self._writes and self._writes[0].done:
            self.landed()
        self.deliver(self.router.shutdown())
        self.flush()
        for link in list(self.links.values()):
            link.close(restarting=True)
