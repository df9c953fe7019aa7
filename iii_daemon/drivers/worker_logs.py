"""Managed workers' output: one thread reads every worker's stdout and stderr (one pipe
each) and appends it to ``<log dir>/workers/NAME.log``, rotated at ``max_bytes`` with
two old files kept, so a worker that floods its output cannot fill the disk. A worker
writing faster than ``rate_bytes`` a second is not read for the rest of that second
(its own writes block: the flood slows itself, not the daemon).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("iii_daemon.drivers.worker_logs")

MAX_BYTES = 4 * 1024 * 1024
BACKUPS = 2
RATE_BYTES = 8 * 1024 * 1024
READ_SIZE = 64 * 1024


def log_file(log_dir: Path, name: str) -> Path:
    return log_dir / f"{name}.log"


class RotatingLog:
    """Appends to one worker's log; past ``max_bytes`` it moves to ``.1`` (``.1`` to
    ``.2``, the oldest goes) and starts anew."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, data: bytes) -> None:
        while data:
            room = self.max_bytes - os.fstat(self._fd).st_size
            if room <= 0:
                self._rotate()
                continue
            chunk, data = data[:room], data[room:]
            os.write(self._fd, chunk)

    def _rotate(self) -> None:
        os.close(self._fd)
        for index in range(BACKUPS, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            newer = self.path if index == 1 else self.path.with_name(
                f"{self.path.name}.{index - 1}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(newer, older)
        self._fd = self._open()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


@dataclass(slots=True)
class _Pipe:
    """One worker's output pipe, and how much it gave in the current second."""

    name: str
    second: int = 0
    read: int = 0


class LogPump:
    """The thread that moves worker output into log files."""

    def __init__(self, log_dir: Path, max_bytes: int = MAX_BYTES,
                 rate_bytes: int = RATE_BYTES) -> None:
        self.log_dir = log_dir
        self.max_bytes = max_bytes
        self.rate_bytes = rate_bytes
        self._logs: dict[str, RotatingLog] = {}
        self._inbox: queue.SimpleQueue[tuple[str, str, object]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="iii-worker-logs",
                                        daemon=True)
        self._started = False

    # --- from the loop --------------------------------------------------------------------

    def follow(self, name: str, fd: int) -> None:
        """Read ``fd`` (a worker's output pipe) into ``name``'s log until it closes."""
        self._send("follow", name, fd)

    def note(self, name: str, text: str) -> None:
        """A line of the daemon's own in the worker's log, between its output."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        self._send("note", name, f"--- iii {stamp}Z: {text} ---\n".encode())

    def close(self) -> None:
        if self._started:
            self._send("stop", "", None)
            self._thread.join(5)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _send(self, what: str, name: str, value: object) -> None:
        if not self._started:
            self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._thread.start()
            self._started = True
        self._inbox.put((what, name, value))
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    # --- the thread -----------------------------------------------------------------------

    def _log(self, name: str) -> RotatingLog:
        found = self._logs.get(name)
        if found is None:
            found = self._logs[name] = RotatingLog(log_file(self.log_dir, name),
                                                   self.max_bytes)
        return found

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        reading: dict[int, _Pipe] = {}
        paused: dict[int, float] = {}
        while True:
            timeout = max(0.0, min(paused.values()) - time.monotonic()) if paused else None
            for key, _ in selector.select(timeout):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    if not self._take_inbox(selector, reading):
                        self._shut(selector, reading)
                        return
                    continue
                self._read(key.fd, selector, reading, paused)
            now = time.monotonic()
            for fd, until in list(paused.items()):
                if until <= now and fd in reading:
                    del paused[fd]
                    selector.register(fd, selectors.EVENT_READ, fd)

    def _take_inbox(self, selector: selectors.BaseSelector,
                    reading: dict[int, _Pipe]) -> bool:
        while True:
            try:
                what, name, value = self._inbox.get_nowait()
            except queue.Empty:
                return True
            if what == "stop":
                return False
            try:
                if what == "follow":
                    assert isinstance(value, int)
                    reading[value] = _Pipe(name)
                    selector.register(value, selectors.EVENT_READ, value)
                elif what == "note":
                    assert isinstance(value, bytes)
                    self._log(name).write(value)
            except OSError as exc:
                log.warning("worker %s: cannot write its log: %s", name, exc)

    def _read(self, fd: int, selector: selectors.BaseSelector,
              reading: dict[int, _Pipe], paused: dict[int, float]) -> None:
        pipe = reading[fd]
        name = pipe.name
        try:
            data = os.read(fd, READ_SIZE)
        except OSError:
            data = b""
        if not data:
            selector.unregister(fd)
            del reading[fd]
            os.close(fd)
            return
        try:
            self._log(name).write(data)
        except OSError as exc:
            log.warning("worker %s: cannot write its log: %s", name, exc)
        second = int(time.monotonic())
        if pipe.second != second:
            pipe.second, pipe.read = second, 0
        pipe.read += len(data)
        if pipe.read > self.rate_bytes:
            selector.unregister(fd)  # the rest of this second: its writes wait
            paused[fd] = second + 1.0

    def _shut(self, selector: selectors.BaseSelector,
              reading: dict[int, _Pipe]) -> None:
        for fd in list(reading):
            with contextlib.suppress(OSError):
                os.close(fd)
        selector.close()
        for found in self._logs.values():
            found.close()
