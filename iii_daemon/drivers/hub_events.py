"""Live events to watchers, a few times a second: the core decides what each watcher
gets (:func:`~iii_daemon.core.watchers.fan_out`); this only holds them and moves bytes."""

from __future__ import annotations

import asyncio
import time

from iii_daemon.core.effects import Emit
from iii_daemon.core.watchers import fan_out
from iii_daemon.drivers.links import Carrier

#: Unsent event bytes a watcher may hold; past that its events are dropped and counted.
WATCH_BUFFER = 1024 * 1024
#: How often live events go out to watchers (together).
WATCH_FLUSH_S = 0.05
#: Live events held for watchers before a fan-out is brought forward.
LIVE_BATCH = 4096


class LiveEvents:
    def __init__(self, hub: Carrier, watch_buffer: int = WATCH_BUFFER) -> None:
        self.hub = hub
        #: Unsent bytes a watcher may hold before events for it are dropped (counted).
        self.watch_buffer = watch_buffer
        #: Live events since the last fan-out (every WATCH_FLUSH_S, after the answers
        #: of the calls that made them).
        self._live: list[Emit] = []
        self._handle: asyncio.Handle | None = None

    def add(self, emit: Emit) -> None:
        """An event for every watcher that wants it: after this turn's answers (callers
        wait for no watcher), with the others of the next ``WATCH_FLUSH_S``. Per call, a
        fan-out would cost a loop callback and each watcher's setup (measured: 18 us a
        call with two watchers), and the callers would pay it."""
        self._live.append(emit)
        loop = self.hub.loop
        if self._handle is None:
            self._handle = loop.call_later(WATCH_FLUSH_S, self._fan_out)
        elif len(self._live) >= LIVE_BATCH:  # a flood: no more than this held
            self._handle.cancel()
            self._handle = loop.call_soon(self._fan_out)

    def replay(self, emit: Emit) -> None:
        """An event for one watcher (its replay): now, behind what waited for it."""
        conn_id = emit.to
        watcher = None if conn_id is None else self.hub.router.watchers.get(conn_id)
        if conn_id is None or watcher is None or self.hub.unsent(conn_id) is None:
            return
        self.hub.hold(conn_id, watcher.replay(emit.as_dict()))

    def _fan_out(self) -> None:
        """Send the live events since the last fan-out to their watchers, behind
        whatever their connections have queued already (a replay): a watcher is woken a
        few times a second, not once per call."""
        self._handle = None
        live, self._live = self._live, []
        # Dicts, or Finished (its frame made without one): see event_log.
        shares = fan_out(self.hub.router.watchers, [emit.event for emit in live],
                         self.hub.unsent, self.watch_buffer, time.monotonic())
        for conn_id, share in shares.items():
            self.hub.hold(conn_id, share)
        if shares:
            self.hub.flush()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
