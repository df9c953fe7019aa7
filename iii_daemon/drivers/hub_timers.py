"""The hub's two timers: the core's deadlines (timeouts, crons, delayed messages), and
the pace of queue deliveries while calls are being routed."""

from __future__ import annotations

import asyncio
import logging
import time

from iii_daemon.drivers.links import Carrier

log = logging.getLogger("iii_daemon.drivers.hub")

#: The longest the timer sleeps; far deadlines are re-armed (loops reject huge delays).
MAX_TIMER_S = 3600.0
#: While calls are being routed (one came within ``BUSY_WINDOW_S``), queue deliveries go
#: ``QUEUE_SHARE`` at a time, a pause of ``QUEUE_YIELD_S`` between (at most 4 000/s):
#: a draining backlog then leaves the callers and their workers the CPU (see
#: benchmarks/queues.py: sync calls keep about 0.8x their pace; without it, 0.4x).
QUEUE_SHARE = 8
QUEUE_YIELD_S = 0.002
BUSY_WINDOW_S = 0.02


class Deadlines:
    """One loop timer at the core's earliest deadline."""

    def __init__(self, hub: Carrier) -> None:
        self.hub = hub
        self._timer: asyncio.TimerHandle | None = None
        self._at: float | None = None
        #: After a failing timer callback, wait at least this long before the next one.
        self._floor = 0.0

    def schedule(self) -> None:
        deadline = self.hub.router.next_deadline()
        if deadline is None or (self._at is not None and self._at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = self.hub.loop
        self._at = min(max(deadline, self._floor), loop.time() + MAX_TIMER_S)
        self._timer = loop.call_at(self._at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._at = None
        now = time.monotonic()
        router = self.hub.router
        try:
            router.tick_clock(now, time.time())  # cron follows the wall clock
            self.hub.deliver(router.expire(now))
        except Exception:
            # Never let one bad deadline stop the timer: timeouts and crons depend on it.
            # A floor keeps a deadline that fails every time from spinning the loop.
            log.exception("error while handling deadlines; the timer goes on")
            self._floor = now + 0.1
        self.hub.flush()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class QueuePacer:
    """Queue deliveries (the router leaves pacing them to the hub) run after each turn's
    input. A backlog is background work: while calls keep arriving it takes a small
    share, a few deliveries and then a pause that leaves the CPU to the callers and the
    workers serving them; at full speed once they stop."""

    def __init__(self, hub: Carrier) -> None:
        self.hub = hub
        self._pump: asyncio.Handle | None = None
        #: ``router.calls_routed`` when last looked at, and when it last moved.
        self._calls_seen = 0
        self._last_call_at = -1e9

    def schedule(self) -> None:
        """Deliver soon, if there is anything to deliver and nothing is scheduled."""
        router = self.hub.router
        if self._pump is not None or not (router.queues.dirty and router.paced_queues):
            return
        loop = self.hub.loop
        if self._calls_busy():
            self._pump = loop.call_later(QUEUE_YIELD_S, self._deliver)
        else:
            self._pump = loop.call_soon(self._deliver)

    def _calls_busy(self) -> bool:
        """Calls arrived within the last ``BUSY_WINDOW_S``."""
        now = self.hub.loop.time()
        routed = self.hub.router.calls_routed
        if self._calls_seen != routed:
            self._calls_seen = routed
            self._last_call_at = now
        return now - self._last_call_at < BUSY_WINDOW_S

    def _deliver(self) -> None:
        self._pump = None
        try:
            self.hub.deliver(self.hub.router.pump_queues(
                time.monotonic(), QUEUE_SHARE if self._calls_busy() else None))
        except Exception:
            log.exception("error while delivering queued messages; the hub goes on")
        self.hub.flush()

    def cancel(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
