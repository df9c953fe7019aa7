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
from typing import TYPE_CHECKING

from iii_sdk.worker import III, InitOptions, register_worker

if TYPE_CHECKING:
    from iii_daemon.lifecycle.serve import DaemonConfig


class DaemonThread:
    """``serve(config)`` on an event loop of its own (uvloop when installed, as the
    daemon's process uses) in a background thread."""

    def __init__(self, config: DaemonConfig, name: str = "iii-test-daemon") -> None:
        self.config = config
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        #: Why ``serve`` ended, if it raised.
        self.error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Return once the daemon listens.

        Raises:
            TimeoutError: it did not get ready in time. Whatever ``serve`` raised.
        """
        from iii_daemon.lifecycle.serve import new_runner, serve

        ready = threading.Event()

        async def main() -> None:
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            await serve(self.config, self._stop, ready.set)

        def run() -> None:
            try:
                with new_runner() as runner:
                    runner.run(main())
            except BaseException as exc:  # surfaced by start()
                self.error = exc
            finally:
                ready.set()

        self.error = None
        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"the daemon did not get ready in {timeout} s")
        if self.error is not None:
            raise self.error

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop as SIGTERM would, and wait for it.

        Raises:
            TimeoutError: it did not stop in time.
        """
        if self._loop is not None and self._stop is not None and self.alive:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the daemon did not stop in {timeout} s")


class InProcessDaemon:
    """Start with ``start()`` or ``with``; ``address`` is what workers connect to."""

    def __init__(self, options: InitOptions | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="iii-test-")
        self.socket_path = Path(self._tmp.name) / "iii.sock"
        self.data_dir = Path(self._tmp.name) / "data"
        self._options = options
        self._daemon: DaemonThread | None = None
        self._workers: list[III] = []

    @property
    def address(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> InProcessDaemon:
        from iii_daemon.lifecycle.serve import DaemonConfig

        # Queues, state and triggers in an in-memory SQLite store: no fsync in tests.
        self._daemon = DaemonThread(DaemonConfig(
            socket_path=self.socket_path, data_dir=self.data_dir, ws_port=0, http_port=0,
            store_in_memory=True))
        self._daemon.start()
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
        if self._daemon is not None:
            self._daemon.stop()
        self._tmp.cleanup()

    def __enter__(self) -> InProcessDaemon:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
