"""Threads for sync handlers: started as needed up to a cap, and never in the way of
the process's exit.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits,
so one handler stuck in a read would keep a worker alive after Ctrl-C or SIGTERM for as
long as it stays stuck. These threads are daemon threads: a worker that has answered
its calls (``worker_stopping``) exits at once, whatever its handlers are doing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

#: A job, or None: the thread that takes it ends.
_Job = tuple[Callable[..., Any], tuple[Any, ...], Callable[[Any, BaseException | None], None]]


class HandlerPool:
    def __init__(self, max_threads: int, name: str = "iii-handler") -> None:
        self._max = max_threads
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        #: Threads waiting for a job, and jobs no thread has taken yet: a job waits
        #: behind a busy thread only when the cap is reached.
        self._idle = 0
        self._queued = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...],
               done: Callable[[Any, BaseException | None], None]) -> None:
        """Run ``fn(*args)`` on a pool thread, then ``done(result, exc)`` on that thread.
        Jobs beyond the cap wait for a thread (the caller bounds how many it submits)."""
        with self._lock:
            if self._closed:
                return
            self._queued += 1
            start = self._queued > self._idle and self._threads < self._max
            if start:
                self._threads += 1
                number = self._threads
        self._jobs.put((fn, args, done))
        if start:
            threading.Thread(target=self._work, name=f"{self._name}-{number}",
                             daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
                if job is None:
                    return
                self._queued -= 1
            fn, args, done = job
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to done(), not lost
                done(None, exc)
            else:
                done(result, None)
            del job, fn, args, done  # nothing of one call lingers into the next

    def close(self) -> None:
        """Stop taking jobs; idle threads end (busy ones end with the process)."""
        with self._lock:
            self._closed = True
            threads = self._threads
        for _ in range(threads):
            self._jobs.put(None)
