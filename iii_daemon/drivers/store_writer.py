"""The store writer: one thread that commits the core's writes, off the event loop.

The hub submits each :class:`Persist` effect as the core puts it out; the writer takes
everything queued at that moment and commits it in one transaction (many writes, one
commit), marks each effect done and tells the hub, which hands the effects back to the
core in order. When a batch fails, each effect is retried alone, so one bad write (or
a disk that filled up half way) costs only the calls it belongs to.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from iii_daemon.core.effects import Persist
from iii_daemon.core.errors import StoreError
from iii_daemon.core.writes import DURABLE
from iii_daemon.drivers.store import Store

log = logging.getLogger("iii_daemon")

#: Effects committed together at most (bounds a transaction; a batch takes ~ms).
MAX_BATCH = 2_000


class StoreWriter:
    def __init__(self, store: Store, landed: Callable[[], object]) -> None:
        """``landed()`` is called from the writer thread after each batch; it must only
        hand over to the event loop (``loop.call_soon_threadsafe``)."""
        self._store = store
        self._landed = landed
        self._queue: queue.SimpleQueue[list[Persist] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="iii-store-writer",
                                        daemon=True)
        self._thread.start()

    def submit(self, persists: list[Persist]) -> None:
        """Queue a batch of writes (the hub hands over everything one batch of input
        made, in one wake-up)."""
        if self._closed:  # shutting down: the core hears it was not kept
            for persist in persists:
                persist.failure, persist.done = "the daemon is shutting down", True
            return
        self._queue.put(persists)

    def close(self) -> None:
        """Commit what is queued, then stop the thread (blocks until it has)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = list(first)
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch += item
            self._commit(batch)
            try:
                self._landed()
            except Exception:  # the loop is gone (shutdown): close() reads the results
                log.debug("could not tell the loop about a commit", exc_info=True)
            if stop:
                return

    def _commit(self, batch: list[Persist]) -> None:
        writes = [write for persist in batch for write in persist.writes]
        durable = any(isinstance(write, DURABLE) for write in writes)
        try:
            self._store.apply(writes, durable)
        except StoreError as exc:
            log.error("%s", exc)
            if len(batch) == 1:
                batch[0].failure = str(exc)
            else:
                for persist in batch:
                    try:
                        self._store.apply(persist.writes, durable)
                    except Exception as alone:  # StoreError, or a bug: this one only
                        persist.failure = str(alone)
        except Exception as exc:  # a bug must not kill the thread and hang every answer
            log.exception("store writer failed")
            for persist in batch:
                persist.failure = f"store writer failed: {exc}"
        for persist in batch:
            persist.done = True
