"""A worker in the foreground of its process: served until SIGTERM or the first Ctrl-C,
then shut down within a few seconds, with the exit code a shell expects."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

#: How often the waiting main thread wakes, so that pending signals are handled.
SIGNAL_CHECK_S = 0.2


def serve_until_stopped(stopped: threading.Event, shutdown: Callable[[], None],
                        ready: Callable[[], object] | None = None) -> None:
    """Wait until ``stopped`` is set (SIGTERM sets it) or Ctrl-C, then ``shutdown()``.
    On the main thread, SIGTERM and SIGINT are handled meanwhile and put back after; a
    second Ctrl-C during the shutdown is ignored.

    Raises:
        SystemExit: 130 after Ctrl-C (no traceback); after SIGTERM it returns.
    """
    main = threading.current_thread() is threading.main_thread()
    previous: Any = None
    previous_int: Any = None
    interrupted = False
    if main:
        previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        previous_int = signal.getsignal(signal.SIGINT)
    try:
        try:
            if ready is not None:
                ready()
            # Not one endless wait: a signal the kernel hands to another thread only
            # runs its handler when the main thread next runs Python code, and a main
            # thread blocked for good never would (seen: Ctrl-C ignored under load).
            while not stopped.wait(SIGNAL_CHECK_S):
                pass
        except KeyboardInterrupt:
            interrupted = True
    finally:
        if main:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the first one counts
        try:
            shutdown()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous_int)
                signal.signal(signal.SIGTERM, previous)
    if interrupted:
        raise SystemExit(130)
