"""``state::set`` and ``state::update`` throughput against a real daemon, next to raw
SQLite doing the same writes in the same run.

    python benchmarks/state_update.py [--calls 20000]

Every call is answered only once its write is committed (WAL, ``synchronous=NORMAL``,
the store's setting for state: it survives a killed daemon). Figures, each with 64 calls
in flight on one connection:

- ``state::set`` of 1 000 keys in turn, next to the baseline: the same rows written by
  one thread with ``INSERT OR REPLACE`` in transactions of 64;
- ``state::update`` incrementing a field of 1 000 keys in turn, and all on one hot key,
  next to the baseline: one thread reading each row, changing it in Python and writing
  it back, in transactions of 64 (what an update costs without a daemon).

Writes JSON to benchmarks/results/state_update.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from queues import WINDOW, Client  # type: ignore[import-not-found]
from run import start_daemon  # type: ignore[import-not-found]

HERE = Path(__file__).resolve().parent
KEYS = 1_000


def value(i: int) -> dict[str, Any]:
    return {"n": i, "status": "open", "pad": "x" * 32}


async def throughput(path: Path, calls: int, payload: Any) -> float:
    """Calls of ``payload(i) -> (function_id, data[, more fields])`` with WINDOW in flight,
    per second."""
    client = await Client.open(path)
    started = time.perf_counter()
    sent = answered = 0
    while answered < calls:
        while sent < calls and sent - answered < WINDOW:
            function_id, data, *more = payload(sent)
            client.send({"type": "invokefunction", "function_id": function_id,
                         "invocation_id": f"c{sent}", "data": data, **(more or [{}])[0]})
            sent += 1
        await client.writer.drain()
        answer = await client.recv()
        assert "error" not in answer, answer
        answered += 1
    rate = calls / (time.perf_counter() - started)
    client.writer.close()
    return rate


def measure(calls: int) -> dict[str, float]:
    increment = [{"type": "increment", "path": "n", "by": 1}]
    with tempfile.TemporaryDirectory(prefix="iii-su-", dir="/tmp") as tmp:
        daemon, sock, _ = start_daemon(Path(tmp))
        try:
            async def run() -> dict[str, float]:
                sets = await throughput(sock, calls, lambda i: (
                    "state::set", {"scope": "bench", "key": f"k{i % KEYS}", "value": value(i)}))
                spread = await throughput(sock, calls, lambda i: (
                    "state::update", {"scope": "bench", "key": f"k{i % KEYS}",
                                      "ops": increment}))
                hot = await throughput(sock, calls, lambda i: (
                    "state::update", {"scope": "hot", "key": "counter", "ops": increment}))
                return {"set_per_s": sets, "update_per_s": spread, "update_hot_key_per_s": hot}

            figures = asyncio.run(run())
            # Every increment counted: 1 000 keys got calls / 1 000 each, the hot key all.
            client_check = asyncio.run(_read(sock, "hot", "counter"))
            assert client_check == {"n": calls}, client_check
            return figures
        finally:
            daemon.terminate()
            daemon.wait(10)


async def _read(path: Path, scope: str, key: str) -> Any:
    client = await Client.open(path)
    client.send({"type": "invokefunction", "function_id": "state::get", "invocation_id": "r",
                 "data": {"scope": scope, "key": key}})
    answer = await client.recv()
    client.writer.close()
    return answer.get("result")


def raw_sqlite(calls: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(os.path.join(tmp, "raw.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE state (scope TEXT NOT NULL, key TEXT NOT NULL, "
                   "value TEXT NOT NULL, PRIMARY KEY (scope, key))")
        started = time.perf_counter()
        for first in range(0, calls, WINDOW):
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO state VALUES (?,?,?)",
                           [("bench", f"k{i % KEYS}", json.dumps(value(i)))
                            for i in range(first, min(first + WINDOW, calls))])
            db.execute("COMMIT")
        sets = calls / (time.perf_counter() - started)
        started = time.perf_counter()
        for first in range(0, calls, WINDOW):
            db.execute("BEGIN")
            for i in range(first, min(first + WINDOW, calls)):
                key = f"k{i % KEYS}"
                (text,) = db.execute("SELECT value FROM state WHERE scope = ? AND key = ?",
                                     ("bench", key)).fetchone()
                row = json.loads(text)
                row["n"] += 1
                db.execute("UPDATE state SET value = ? WHERE scope = ? AND key = ?",
                           (json.dumps(row), "bench", key))
            db.execute("COMMIT")
        updates = calls / (time.perf_counter() - started)
        db.close()
        return {"set_per_s": sets, "update_per_s": updates}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    raw = raw_sqlite(args.calls)
    ours = measure(args.calls)
    rows = [("state::set (calls/s)", ours["set_per_s"], raw["set_per_s"]),
            ("state::update, 1 000 keys (calls/s)", ours["update_per_s"], raw["update_per_s"]),
            ("state::update, one hot key (calls/s)", ours["update_hot_key_per_s"],
             raw["update_per_s"])]
    print(f"{'figure (64 in flight)':40} {'daemon':>10} {'raw SQLite':>11} {'ratio':>7}")
    for name, mine, baseline in rows:
        print(f"{name:40} {mine:10.0f} {baseline:11.0f} {mine / baseline:6.2f}x")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "state_update.json").write_text(json.dumps(
        {"daemon": ours, "raw_sqlite": raw}, indent=2))


if __name__ == "__main__":
    main()
