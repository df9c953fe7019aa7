"""The worker of benchmarks/http.py: the real SDK, an async handler behind an http
trigger answering what the bare baseline answers."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from iii_sdk import register_worker


async def echo_id(request: Any) -> Any:
    return {"id": request["path_params"]["id"]}


worker = register_worker(sys.argv[1])
worker.register_function("bench::http", echo_id)
worker.register_trigger({"type": "http", "function_id": "bench::http",
                         "config": {"api_path": "bench/:id", "http_method": "GET"}})
worker.ping()
print("ready", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
worker.shutdown()
