"""Long work shows a progress bar on a terminal, and nothing when piped or quiet:
``iii queue redrive`` and ``purge`` of many messages go in steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iii_sdk import register_worker
from tests.helpers import ThreadDaemon, run_iii, run_with_terminal_stderr, wait_for


def dead_letters(tmp: Path) -> int:
    rows = json.loads(run_iii(tmp, "queue", "list", "-o", "json").stdout)
    return sum(row["dead_letters"] for row in rows)


def test_redrive_and_purge_of_many_go_in_steps_with_a_bar(short_tmp: Path) -> None:
    (short_tmp / "config.toml").write_text("[queues.jobs]\nmax_retries = 0\n"
                                           "concurrency = 64\n")
    daemon = ThreadDaemon(short_tmp).start()
    worker = register_worker(str(daemon.socket_path))
    try:
        async def broken(data: Any) -> Any:
            raise ValueError("no")

        worker.register_function("jobs::run", broken)
        worker.ping()
        count = 5000  # three steps of 2 000
        lines = "".join(json.dumps({"n": n}) + "\n" for n in range(count))
        enqueued = run_iii(short_tmp, "trigger", "jobs::run", "--enqueue", "jobs", "--batch",
                           stdin=lines)
        assert enqueued.returncode == 0, enqueued.stderr
        wait_for(lambda: dead_letters(short_tmp) == count, timeout=60,
                 message="every message to die")
        worker.shutdown()  # what is redriven now waits for a worker

        code, _, terminal = run_with_terminal_stderr(short_tmp, "queue", "redrive", "jobs")
        assert code == 0 and f"{count} messages sent again" in terminal, terminal[-300:]
        assert "redriving jobs" in terminal and f"/{count}" in terminal
        assert dead_letters(short_tmp) == 0

        piped = run_iii(short_tmp, "queue", "purge", "jobs", "--yes")
        assert piped.returncode == 0 and piped.stderr == f"{count} messages dropped\n"
        rows = json.loads(run_iii(short_tmp, "queue", "list", "-o", "json").stdout)
        assert sum(row["ready"] + row["waiting_for_function"] + row["delayed"]
                   + row["dead_letters"] for row in rows) == 0
    finally:
        worker.shutdown()
        daemon.stop()
