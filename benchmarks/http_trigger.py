"""HTTP triggers against a bare aiohttp handler, measured in the same run.

    python benchmarks/http_trigger.py [--requests 4000] [--concurrency 8] [--rounds 2]

Both servers answer ``GET /bench/:id`` with the same JSON. The baseline is a bare
aiohttp handler in its own process (no routing table, no access check, no worker); the
figure is the daemon's http listener routing each request to an SDK worker in another
process (http_worker.py: ``bench::http`` answers the path parameter) and
back: two more hops. One client process drives both, keep-alive, ``--concurrency``
requests in flight; rounds alternate between the two. Reports requests/s, p50 and p99
(median of the rounds) and the ratio to the baseline (targets.md: >= 0.5x, goal 0.7x).
Writes JSON to benchmarks/results/http.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"nothing listens on {port}")


def bare_server(port: int) -> None:
    """``--bare PORT``: the baseline, a bare aiohttp handler with the same answer."""
    from aiohttp import web

    async def handle(request: web.BaseRequest) -> web.Response:
        identity = request.path.rsplit("/", 1)[-1]
        return web.Response(body=json.dumps({"id": identity}).encode(),
                            content_type="application/json")

    async def main() -> None:
        server = web.Server(handle, access_log=None)
        await asyncio.get_running_loop().create_server(server, "127.0.0.1", port)
        await asyncio.Event().wait()

    try:
        import uvloop
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


async def load(port: int, requests: int, concurrency: int) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    url = f"http://127.0.0.1:{port}/bench/"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(i: int) -> None:
            started = time.perf_counter()
            async with session.get(f"{url}{i}") as response:
                body = await response.json()
                assert response.status == 200 and body == {"id": str(i)}, body
            latencies.append(time.perf_counter() - started)

        for i in range(min(200, requests)):  # warm up: connections, caches
            await one(i)
        latencies.clear()
        queue = iter(range(requests))

        async def client() -> None:
            for i in queue:
                await one(i)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests_per_s": requests / elapsed,
            "p50_us": statistics.median(latencies) * 1e6,
            "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6}


class Daemon:
    """The daemon with its http listener, an SDK worker, and the http trigger."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.socket = tmp / "iii.sock"
        env = dict(os.environ, PYTHONPATH=str(REPO), III_CONFIG=str(tmp / "c.toml"))
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "iii_daemon", "--socket", str(self.socket),
             "--data-dir", str(tmp / "data"), "--ws-port", "0", "--http-port",
             str(self.port), "--log-level", "WARNING"], env=env, cwd=REPO)
        wait_for_port(self.port, self.daemon)
        self.worker = subprocess.Popen([sys.executable, str(HERE / "http_worker.py"),
                                        str(self.socket)], stdout=subprocess.PIPE,
                                       text=True, env=env)
        assert self.worker.stdout is not None
        if self.worker.stdout.readline().strip() != "ready":
            raise SystemExit("the worker did not start")

    def close(self) -> None:
        for proc in (self.worker, self.daemon):
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_server(args.bare)
        return
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "daemon": []}
    with tempfile.TemporaryDirectory(prefix="iii-hb-", dir="/tmp") as tmp:
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, __file__, "--bare", str(bare_port)])
        daemon = None
        try:
            wait_for_port(bare_port, bare)
            daemon = Daemon(Path(tmp))
            for _ in range(args.rounds):
                runs["bare"].append(asyncio.run(load(bare_port, args.requests,
                                                     args.concurrency)))
                runs["daemon"].append(asyncio.run(load(daemon.port, args.requests,
                                                       args.concurrency)))
        finally:
            bare.terminate()
            bare.wait(10)
            if daemon is not None:
                daemon.close()
    figures = {name: {key: statistics.median(run[key] for run in rounds)
                      for key in rounds[0]} for name, rounds in runs.items()}
    bare_rate = figures["bare"]["requests_per_s"]
    print(f"{'figure':44} {'value':>10}")
    for name, label in (("bare", "bare aiohttp handler (baseline)"),
                        ("daemon", "http trigger -> SDK worker")):
        rate = figures[name]["requests_per_s"]
        print(f"{label + ', requests/s':44} {rate:10.0f}   {rate / bare_rate:.2f}x baseline")
        print(f"{label + ', p50 (us)':44} {figures[name]['p50_us']:10.0f}")
        print(f"{label + ', p99 (us)':44} {figures[name]['p99_us']:10.0f}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "http.json").write_text(json.dumps(
        {"concurrency": args.concurrency, "rounds": runs, "median": figures,
         "ratio": figures["daemon"]["requests_per_s"] / bare_rate}, indent=2))


if __name__ == "__main__":
    main()
