"""Durable queues against a real daemon, next to raw SQLite measured in the same run.

    python benchmarks/queues.py [--messages 20000] [--repo CHECKOUT]

Figures (targets.md § Queues):

- durable enqueue throughput with 64 calls in flight (``invokefunction`` with
  ``action: enqueue``, a receipt each, for a function nobody serves so nothing drains),
  next to the baseline: the same rows inserted by one thread in transactions of 64
  (one fsync each, WAL, ``synchronous=FULL``): raw SQLite group commit;
- enqueue -> delivery latency p50/p99 (one message at a time to a worker);
- routed sync calls/s alone (before and after), and while a backlog drains into a worker
  in another process (the loop never waits on fsync, and a backlog yields to calls: see
  iii_daemon/drivers/hub_timers.py), with the rate the queue drained at meanwhile.

Writes JSON to benchmarks/results/queues.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
WINDOW = 64


class Client:
    """NDJSON over the Unix socket: calls with a window, and a worker's side."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: Path) -> Client:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=2**26)
        client = cls(reader, writer)
        await client.recv()  # workerregistered
        return client

    def send(self, message: dict[str, Any]) -> None:
        self.writer.write(json.dumps(message).encode() + b"\n")

    async def recv(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(await self.reader.readline())
        return value


async def enqueue_throughput(path: Path, messages: int) -> float:
    """64 callers' worth of enqueues in flight. The client encodes with msgspec and
    reads every answer that has arrived in one go: with the stdlib json and a readline
    each, this one Python client took as long per round trip as the fsync, and the
    figure measured the client."""
    client = await Client.open(path)
    decode = msgspec.json.Decoder().decode
    encode = msgspec.json.Encoder().encode
    started = time.perf_counter()
    sent = answered = 0
    pending = b""
    while answered < messages:
        frames = []
        while sent < messages and sent - answered < WINDOW:
            frames.append(encode({
                "type": "invokefunction", "function_id": "nobody::serves",
                "invocation_id": f"e{sent}", "data": {"n": sent, "pad": "x" * 64},
                "action": {"type": "enqueue", "queue": "bench"}}) + b"\n")
            sent += 1
        client.writer.write(b"".join(frames))
        chunk = await client.reader.read(1 << 20)
        assert chunk, "the daemon closed the connection"
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            assert b'"error"' not in line, decode(line)
        answered += len(lines)
    return messages / (time.perf_counter() - started)


async def serve(path: Path, function_id: str, arrivals: list[float] | None) -> Client:
    worker = await Client.open(path)
    worker.send({"type": "registerfunction", "id": function_id})

    async def loop() -> None:
        while True:
            message = await worker.recv()
            if message.get("type") != "invokefunction":
                continue
            if arrivals is not None:
                arrivals.append(time.time() - message["data"]["sent"])
            worker.send({"type": "invocationresult",
                         "invocation_id": message["invocation_id"],
                         "result": message["data"]})

    asyncio.get_running_loop().create_task(loop())
    return worker


async def delivery_latency(path: Path, count: int) -> tuple[float, float]:
    arrivals: list[float] = []
    await serve(path, "bench::sink", arrivals)
    client = await Client.open(path)
    for i in range(count):
        client.send({"type": "invokefunction", "function_id": "bench::sink",
                     "invocation_id": f"l{i}", "data": {"sent": time.time()},
                     "action": {"type": "enqueue", "queue": "latency"}})
        await client.recv()
        while len(arrivals) <= i:
            await asyncio.sleep(0.0001)
    arrivals.sort()
    return (statistics.median(arrivals) * 1e6, arrivals[int(len(arrivals) * 0.99)] * 1e6)


async def sync_calls(path: Path, calls: int) -> float:
    client = await Client.open(path)
    started = time.perf_counter()
    for i in range(calls):
        client.send({"type": "invokefunction", "function_id": "bench::echo",
                     "invocation_id": f"s{i}", "data": {"sent": 0}})
        await client.recv()
    return calls / (time.perf_counter() - started)


async def calls_while_draining(path: Path, calls: int,
                               backlog: int) -> tuple[float, float, float, float]:
    """Sync calls/s alone, while a backlog drains, and alone again (the machine's pace
    drifts: the two alone figures bracket the other); and how fast the queue drained."""
    await serve(path, "bench::echo", None)
    alone = await sync_calls(path, calls)
    filler = await Client.open(path)
    for _ in range(backlog):  # a backlog for a worker that is not there yet
        filler.send({"type": "invokefunction", "function_id": "bench::drain",
                     "data": {"sent": 0}, "action": {"type": "enqueue", "queue": "drain"}})
    await filler.writer.drain()
    await asyncio.sleep(1.0)  # let the writes land
    # Now it drains at full speed, into a worker in its own process.
    drainer = subprocess.Popen([sys.executable, __file__, "--drain", str(path)],
                               stdout=subprocess.PIPE)
    assert drainer.stdout is not None and drainer.stdout.readline() == b"ready\n"
    before, started = await delivered(path, "drain"), time.perf_counter()
    meanwhile = await sync_calls(path, calls)
    drained = (await delivered(path, "drain") - before) / (time.perf_counter() - started)
    drainer.terminate()
    drainer.wait(10)
    alone_after = await sync_calls(path, calls)
    return alone, meanwhile, alone_after, drained


async def delivered(path: Path, queue: str) -> int:
    """Messages of ``queue`` delivered so far (engine::queues::list)."""
    client = await Client.open(path)
    client.send({"type": "invokefunction", "function_id": "engine::queues::list",
                 "invocation_id": "d"})
    answer = await client.recv()
    client.writer.close()
    return sum(row["delivered"] for row in answer["result"]["queues"]
               if row["queue"] == queue)


async def drain_worker(path: Path) -> None:
    """``--drain SOCKET``: serve bench::drain until terminated."""
    await serve(path, "bench::drain", None)
    print("ready", flush=True)
    await asyncio.Event().wait()


def raw_group_commit(messages: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(os.path.join(tmp, "raw.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                   "id TEXT UNIQUE, queue TEXT, function_id TEXT, data BLOB, "
                   "attempts INTEGER, available_at REAL, enqueued_at REAL)")
        payload = json.dumps({"n": 0, "pad": "x" * 64}).encode()
        started = time.perf_counter()
        for first in range(0, messages, WINDOW):
            db.execute("BEGIN")
            now = time.time()
            db.executemany("INSERT INTO messages (id, queue, function_id, data, attempts, "
                           "available_at, enqueued_at) VALUES (?,?,?,?,0,?,?)",
                           [(str(uuid.uuid4()), "bench", "f", payload, now, now)
                            for _ in range(first, min(first + WINDOW, messages))])
            db.execute("COMMIT")
        rate = messages / (time.perf_counter() - started)
        db.close()
        return rate


def measure(repo: Path, messages: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="iii-qb-") as tmp:
        sock = Path(tmp) / "iii.sock"
        env = dict(os.environ, PYTHONPATH=str(repo), III_CONFIG=str(Path(tmp) / "c.toml"))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "iii_daemon", "--socket", str(sock), "--data-dir",
             str(Path(tmp) / "data"), "--ws-port", "0", "--http-port", "0"],
            env=env, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 15
            while not sock.exists():
                assert time.monotonic() < deadline and daemon.poll() is None, "no daemon"
                time.sleep(0.02)
            time.sleep(0.2)

            async def run() -> dict[str, float]:
                enqueue = await enqueue_throughput(sock, messages)
                p50, p99 = await delivery_latency(sock, 1_000)
                alone, draining, after, drained = await calls_while_draining(
                    sock, 5_000, messages * 3)
                return {"enqueue_per_s": enqueue, "delivery_p50_us": p50,
                        "delivery_p99_us": p99, "sync_calls_per_s_alone": alone,
                        "sync_calls_per_s_while_draining": draining,
                        "sync_calls_per_s_alone_after": after,
                        "drained_per_s_meanwhile": drained}

            return asyncio.run(run())
        finally:
            daemon.terminate()
            daemon.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repo", type=Path, default=HERE.parent,
                        help="the checkout whose daemon to measure (default: this one)")
    parser.add_argument("--drain", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drain:
        asyncio.run(drain_worker(args.drain))
        return
    baseline = raw_group_commit(args.messages)
    figures = measure(args.repo.resolve(), args.messages)
    print(f"{'figure':40} {'value':>12}")
    print(f"{'raw SQLite group commit (rows/s, baseline)':40} {baseline:12.0f}")
    print(f"{'durable enqueue, 64 in flight (msg/s)':40} {figures['enqueue_per_s']:12.0f}"
          f"   {figures['enqueue_per_s'] / baseline:.2f}x baseline")
    print(f"{'enqueue -> delivery p50 (µs)':40} {figures['delivery_p50_us']:12.0f}")
    print(f"{'enqueue -> delivery p99 (µs)':40} {figures['delivery_p99_us']:12.0f}")
    print(f"{'sync calls/s, alone':40} {figures['sync_calls_per_s_alone']:12.0f}")
    alone = (figures["sync_calls_per_s_alone"] + figures["sync_calls_per_s_alone_after"]) / 2
    print(f"{'sync calls/s, alone again':40} {figures['sync_calls_per_s_alone_after']:12.0f}")
    print(f"{'sync calls/s, while a queue drains':40} "
          f"{figures['sync_calls_per_s_while_draining']:12.0f}"
          f"   {figures['sync_calls_per_s_while_draining'] / alone:.2f}x alone")
    print(f"{'  the queue meanwhile (msg/s delivered)':40} "
          f"{figures['drained_per_s_meanwhile']:12.0f}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "queues.json").write_text(json.dumps(
        {"raw_group_commit_rows_per_s": baseline, **figures}, indent=2))


if __name__ == "__main__":
    main()
