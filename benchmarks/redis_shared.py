"""Several daemons on one Redis: what sharing costs, next to Redis itself (same run).

    python benchmarks/redis_shared.py [--calls 20000]

Starts a ``redis-server`` on a free port and two daemons on it, then reports:

- ``state::set`` through a daemon, 64 in flight on one connection, next to redis-py
  doing the same number of ``HSET`` with 64 in flight (pipelined) on its own;
- a state change on daemon A to the ``state`` trigger's function on daemon B: p50/p99
  of the whole way (call, Redis, the change event, the trigger, the worker);
- enqueue with its receipt (a routed call with ``action: enqueue``, for a function
  nobody serves: only the enqueue is measured), 64 in flight, next to redis-py's own
  ``XADD`` of the same fields, pipelined 64 at a time;
- a message enqueued on daemon A to the worker on daemon B that serves it: p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemons import save, start_daemon  # type: ignore[import-not-found]
from http_trigger import free_port  # type: ignore[import-not-found]
from queues import WINDOW  # type: ignore[import-not-found]
from state_update import throughput, value  # type: ignore[import-not-found]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _wait_for_redis(port: int) -> None:
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not answer") from None
            time.sleep(0.02)
    client.close()


async def _raw(port: int, calls: int, command: Callable[[Any, int], Any]) -> float:
    """redis-py on its own: ``command(pipe, i)`` ``calls`` times, WINDOW in a pipeline."""
    import redis.asyncio as redis

    client = redis.Redis(port=port)
    started = time.perf_counter()
    for first in range(0, calls, WINDOW):
        pipe = client.pipeline(transaction=False)
        for i in range(first, min(calls, first + WINDOW)):
            command(pipe, i)
        await pipe.execute()
    rate = calls / (time.perf_counter() - started)
    await client.aclose()
    return rate


def _hset(pipe: Any, i: int) -> None:
    pipe.hset("raw:bench", f"k{i % 1000}", json.dumps(value(i)))


def _xadd(pipe: Any, i: int) -> None:
    """What a message's write costs Redis itself: XADD of the fields a message keeps."""
    pipe.xadd("raw:bench-stream", {"fn": "nobody", "trigger": "", "id": f"m{i}",
                                   "queue": "bench", "data": json.dumps(value(i)),
                                   "attempts": 0, "enq": repr(time.time()), "err": "",
                                   "route": ""})


def _cross_daemon(a: Path, b: Path, samples: int, key: str,
                  bind: Callable[[Any], None], send: Callable[[Any, int], Any]) -> list[float]:
    """Milliseconds from ``send(client on A, n)`` to ``bench::got`` on B getting ``n``
    (under ``key`` of its data); ``bind(worker on B)`` sets up what leads there."""
    from iii_sdk import connect, register_worker

    arrived: dict[int, float] = {}
    event = threading.Event()
    worker = register_worker(str(b))

    def got(data: Any) -> None:
        arrived[data[key]] = time.perf_counter()
        event.set()

    worker.register_function("bench::got", got)
    bind(worker)
    latencies = []
    with connect(str(a)) as client:
        for n in range(samples):
            event.clear()
            started = time.perf_counter()
            send(client, n)
            while n not in arrived:
                if not event.wait(5):
                    raise SystemExit(f"{n} never reached daemon B's worker")
                event.clear()
            latencies.append((arrived[n] - started) * 1000)
    worker.shutdown()
    return latencies


def _state_trigger(a: Path, b: Path, samples: int) -> list[float]:
    """A state change on A to the ``state`` trigger's function on B."""
    return _cross_daemon(a, b, samples, "new_value", lambda worker: worker.register_trigger({
        "type": "state", "function_id": "bench::got", "config": {"scope": "cross"}}).ready(5),
        lambda client, n: client.trigger({"function_id": "state::set", "payload": {
            "scope": "cross", "key": "k", "value": n}}))


def _queue_delivery(a: Path, b: Path, samples: int) -> list[float]:
    """A message enqueued on A to the worker on B that serves its function."""
    from iii_sdk import TriggerAction

    def enqueue(client: Any, n: int) -> Any:
        return client.trigger({"function_id": "bench::got", "payload": {"n": n},
                               "action": TriggerAction.Enqueue(queue="cross")})

    def served(worker: Any) -> None:
        from iii_sdk import connect

        with connect(str(a)) as client:
            while not enqueue(client, -1)["function_served"]:
                time.sleep(0.05)  # until A learns B serves it (a tick)

    return _cross_daemon(a, b, samples, "n", served, enqueue)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "redis_shared.json")
    args = parser.parse_args()
    server_bin = shutil.which("redis-server")
    if server_bin is None:
        raise SystemExit("redis-server is not installed")
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="iii-redis-", dir="/tmp") as name:
        tmp = Path(name)
        port = free_port()
        server = subprocess.Popen([server_bin, "--port", str(port), "--save", "",
                                   "--appendonly", "no", "--dir", str(tmp)],
                                  stdout=subprocess.DEVNULL)
        _wait_for_redis(port)
        url = f"redis://127.0.0.1:{port}/0"
        daemons = [start_daemon(tmp, n, "--redis-url", url) for n in ("a", "b")]
        try:
            through = asyncio.run(throughput(daemons[0][1], args.calls, lambda i: (
                "state::set", {"scope": "bench", "key": f"k{i % 1000}", "value": value(i)})))
            raw = asyncio.run(_raw(port, args.calls, _hset))
            latencies = sorted(_state_trigger(daemons[0][1], daemons[1][1], args.samples))
            enqueued = asyncio.run(throughput(daemons[0][1], args.calls, lambda i: (
                "nobody::serves", value(i),
                {"action": {"type": "enqueue", "queue": "bench"}})))
            raw_xadd = asyncio.run(_raw(port, args.calls, _xadd))
            queued = sorted(_queue_delivery(daemons[0][1], daemons[1][1], args.samples))
        finally:
            for daemon, _ in daemons:
                daemon.terminate()
                daemon.wait(30)
            server.terminate()
            server.wait(10)
    quantiles = statistics.quantiles(latencies, n=100)
    queue_quantiles = statistics.quantiles(queued, n=100)
    figures = {"state_set_per_s": round(through), "raw_hset_per_s": round(raw),
               "ratio": round(through / raw, 3),
               "cross_daemon_trigger_p50_ms": round(quantiles[49], 3),
               "cross_daemon_trigger_p99_ms": round(quantiles[98], 3),
               "enqueue_per_s": round(enqueued), "raw_xadd_per_s": round(raw_xadd),
               "enqueue_ratio": round(enqueued / raw_xadd, 3),
               "cross_daemon_queue_p50_ms": round(queue_quantiles[49], 3),
               "cross_daemon_queue_p99_ms": round(queue_quantiles[98], 3)}
    print(f"state::set through a daemon ({WINDOW} in flight)   {figures['state_set_per_s']:>8}/s")
    print(f"redis-py HSET, pipelined {WINDOW}                  {figures['raw_hset_per_s']:>8}/s")
    print(f"ratio                                         {figures['ratio']:>8}x (aim >= 0.5x)")
    print(f"state change on A -> trigger on B   p50 {figures['cross_daemon_trigger_p50_ms']} ms, "
          f"p99 {figures['cross_daemon_trigger_p99_ms']} ms (aim p99 <= 10 ms)")
    print(f"enqueue with receipt ({WINDOW} in flight)        {figures['enqueue_per_s']:>8}/s")
    print(f"redis-py XADD, pipelined {WINDOW}                  {figures['raw_xadd_per_s']:>8}/s")
    print(f"ratio                                         {figures['enqueue_ratio']:>8}x "
          f"(aim >= 0.5x)")
    print(f"enqueue on A -> worker on B         p50 {figures['cross_daemon_queue_p50_ms']} ms, "
          f"p99 {figures['cross_daemon_queue_p99_ms']} ms (aim p99 <= 10 ms)")
    save(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
