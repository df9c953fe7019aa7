"""The worker side of the benchmark: the real SDK, async handlers."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from iii_sdk import register_worker

count = 0


async def echo(data: Any) -> Any:
    return data


async def tally(data: Any) -> Any:
    global count
    count += 1
    return None


async def total(data: Any) -> int:
    return count


worker = register_worker(sys.argv[1])
worker.register_function("bench::echo", echo)
worker.register_function("bench::tally", tally)
worker.register_function("bench::total", total)
worker.ping()
print("ready", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
worker.shutdown()
