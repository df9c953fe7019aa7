"""A real daemon inside the test process, for application tests.

    from iii_sdk.testing import InProcessDaemon

    def test_add():
        with InProcessDaemon() as daemon:
            worker = daemon.worker()
            worker.register_function("math::add", add)
            assert worker.trigger({"function_id": "math::add", "payload": {"a": 1, "b": 2}})

The daemon runs on its own event loop in a background thread, on a socket in a fresh
temporary directory, with its store (state, triggers, durable queues) in memory, so
tests never touch the user's daemon and start in milliseconds.

This module is the one place where ``iii_sdk`` imports ``iii_daemon`` (a deliberate,
tested exception to the import rules): application tests want the real routing
semantics, not a look-alike.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from iii_sdk.worker import III, InitOptions, register_worker


class InProcessDaemon:
    """Start with ``start()`` or ``with``; ``address`` is what workers connect to."""

    def __init__(self, options: InitOptions | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="iii-test-")
        self.socket_path = Path(self._tmp.name) / "iii.sock"
        self.data_dir = Path(self._tmp.name) / "data"
        self._options = options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._workers: list[III] = []
        self._error: BaseException | None = None

    @property
    def address(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> InProcessDaemon:
        from iii_daemon.lifecycle.serve import DaemonConfig, serve

        ready = threading.Event()
        # Queues, state and triggers in an in-memory SQLite store: no fsync in tests.
        config = DaemonConfig(socket_path=self.socket_path, data_dir=self.data_dir,
                              ws_port=0, http_port=0, store_in_memory=True)

        async def main() -> None:
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            await serve(config, self._stop, ready.set)

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # surfaced by start()
                self._error = exc
                ready.set()

        self._thread = threading.Thread(target=run, name="iii-test-daemon", daemon=True)
        self._thread.start()
        ready.wait(timeout=10)
        if self._error is not None:
            raise self._error
        return self

    def worker(self, options: InitOptions | None = None) -> III:
        """A worker connected to this daemon; shut down with the daemon."""
        worker = register_worker(self.address, options or self._options)
        self._workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self._workers:
            worker.shutdown()
        self._workers.clear()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._tmp.cleanup()

    def __enter__(self) -> InProcessDaemon:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
