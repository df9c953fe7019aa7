"""An official iii SDK worker (any version on the running interpreter) serving
``official::ping``: ``python official_ping.py PORT``. Prints ``ready``, then serves until
killed (it reconnects by itself when the daemon restarts, if the SDK does)."""

from __future__ import annotations

import sys
import time

import iii


def main() -> None:
    options = iii.InitOptions(worker_name="official-ping", otel={"enabled": False})
    worker = iii.register_worker(f"ws://127.0.0.1:{sys.argv[1]}", options)
    try:
        worker.register_function("official::ping", lambda data: "pong")
    except TypeError:  # SDKs before 0.20 take a dict of the function's fields
        worker.register_function({"id": "official::ping"}, lambda data: "pong")
    print("ready", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
