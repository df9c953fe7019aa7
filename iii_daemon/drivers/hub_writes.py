"""The hub's writes to the store: a :class:`Persist` effect goes to the store writer at
the next flush (a batch of input, one wake-up of the writer thread); when the writer says
it landed, it is handed back to the core, in the order the writes were made, which then
answers the call that wrote. While more than ``limit`` writes are in flight, the
connections adding more are not read."""

from __future__ import annotations

import collections
import logging
import time

from iii_daemon.core.effects import Persist
from iii_daemon.drivers.links import Carrier, NoStore, Writer

log = logging.getLogger("iii_daemon.drivers.hub")

#: Writes in flight before the hub stops reading the connection that adds more.
WRITES_LIMIT = 20_000


class StoreWrites:
    def __init__(self, hub: Carrier, writer: Writer | None = None,
                 limit: int = WRITES_LIMIT) -> None:
        self.hub = hub
        self.writer: Writer = writer if writer is not None else NoStore()
        self.limit = limit
        #: Writes not handed back to the core yet, oldest first.
        self.pending: collections.deque[Persist] = collections.deque()
        #: Writes made since the last flush: submitted together.
        self._unsubmitted: list[Persist] = []
        #: Connections not read until fewer writes are in flight.
        self._waiting: set[int] = set()

    def add(self, persist: Persist) -> None:
        self._unsubmitted.append(persist)
        self.pending.append(persist)

    @property
    def full(self) -> bool:
        return len(self.pending) > self.limit

    def wait(self, conn_id: int) -> None:
        """Read ``conn_id`` again (``hub.drained``) once fewer writes are in flight."""
        self._waiting.add(conn_id)

    def submit(self) -> None:
        """Hand the writes made since the last flush to the writer, as one batch."""
        if self._unsubmitted:
            batch, self._unsubmitted = self._unsubmitted, []
            self.writer.submit(batch)
            if batch[-1].done:  # refused at once (no store, shutting down)
                self.hub.loop.call_soon(self.landed)

    def landed(self) -> None:
        """The store writer finished a batch: hand the writes that landed back to the
        core, in the order they were made, and deliver what that produces."""
        pending = self.pending
        now = time.monotonic()
        while pending and pending[0].done:
            persist = pending.popleft()
            try:
                self.hub.deliver(self.hub.router.persisted(persist, now))
            except Exception:
                log.exception("error after a store write; the hub goes on")
        self.hub.flush()
        if not self.full and self._waiting:
            waiting, self._waiting = self._waiting, set()
            for conn_id in waiting:
                self.hub.drained(conn_id)

    def close(self) -> None:
        """What is queued commits (writes made from now on fail and say so), and the
        calls that wrote get their answers."""
        self.writer.close()
        while self.pending and self.pending[0].done:
            self.landed()
