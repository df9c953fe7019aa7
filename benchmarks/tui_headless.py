"""The TUI without a terminal, attached to a daemon until SIGTERM (for benchmarks):

    python benchmarks/tui_headless.py SOCKET [--flood-report]

With ``--flood-report`` it sends the app an ``e`` key every 0.5 s and prints, on SIGTERM,
one JSON line: the slowest time from a keypress until the app had handled it (the log
redrawn with errors only, or back), how many presses, and its memory (max RSS, KiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import sys
import time

from textual import events

from iii_cli.tui.app import IIIApp


async def main(socket: str, report: bool) -> None:
    app = IIIApp(socket)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    slowest, presses = 0.0, 0
    async with app.run_test(size=(120, 40)) as pilot:
        while app.model.state != "connected":
            await pilot.pause(0.05)
        print("ready", flush=True)
        while not stop.is_set():
            if report:
                before = app.model.errors_only
                started = time.perf_counter()
                app.post_message(events.Key("e", "e"))  # as the terminal would send it
                while app.model.errors_only == before:  # handled: the log was redrawn
                    await asyncio.sleep(0.001)
                took = time.perf_counter() - started
                slowest = max(slowest, took)
                presses += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    if report:
        print(json.dumps({"slowest_keypress_ms": slowest * 1000, "presses": presses,
                          "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}),
              flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], "--flood-report" in sys.argv))
