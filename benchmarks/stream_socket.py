"""The stream socket: one ``stream::set`` fanned out to many subscribed clients.

Figures, same run, one daemon (``python -m iii_daemon --streams-port``):

- fan-out: the time from sending a ``stream::set`` until the *last* of N clients (1 000
  by default, all joined to the group) has received its change, p50 and p99 over the
  rounds. The clients live in a process of their own (``--subscribers``), which notes
  the monotonic clock (one clock for every process) when a round's last frame arrives;
- ``stream::set`` throughput, 64 in flight, with no client subscribed (the baseline)
  and with the N clients subscribed and reading.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from daemons import REPO, save, start_daemon  # type: ignore[import-not-found]  # noqa: E402
from http_trigger import free_port  # type: ignore[import-not-found]  # noqa: E402
from state_update import throughput  # type: ignore[import-not-found]  # noqa: E402


class Subscriber(asyncio.Protocol):
    """A bare client: the handshake and a join by hand, then frames read straight off
    the bytes (a client library would cost the benchmark more than the daemon)."""

    def __init__(self, n: int, count: int, got: dict[bytes, int],
                 joined: asyncio.Semaphore) -> None:
        self.n, self.count, self.got, self.joined = n, count, got, joined
        self.buffer = b""
        self.open = False
        self.synced = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        f"Sec-WebSocket-Version: 13\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open:
            head, found, rest = self.buffer.partition(b"\r\n\r\n")
            if not found:
                return
            assert b" 101 " in head.split(b"\r\n", 1)[0], head
            self.open, self.buffer = True, rest
            join = json.dumps({"type": "join", "data": {
                "subscriptionId": f"s{self.n}", "streamName": "bench", "groupId": "g"}})
            mask = os.urandom(4)
            body = bytes(b ^ mask[i % 4] for i, b in enumerate(join.encode()))
            self.transport.write(bytes([0x81, 0x80 | len(body)]) + mask + body)
        buffer, at = self.buffer, 0
        while len(buffer) - at >= 2:
            size, start = buffer[at + 1] & 0x7F, at + 2
            if size == 126:
                size, start = int.from_bytes(buffer[at + 2:at + 4]), at + 4
            elif size == 127:
                size, start = int.from_bytes(buffer[at + 2:at + 10]), at + 10
            if len(buffer) < start + size:
                break
            self.frame(buffer[start:start + size])
            at = start + size
        self.buffer = buffer[at:]

    def frame(self, payload: bytes) -> None:
        if not self.synced:
            self.synced = True
            self.joined.release()
            return
        mark = payload.find(b'"id":"r')
        if mark < 0:
            return  # the throughput run's items
        item = payload[mark + 7:payload.index(b'"', mark + 7)]
        seen = self.got[item] = self.got.get(item, 0) + 1
        if seen == self.count:
            print(item.decode(), time.monotonic(), flush=True)


async def subscribers(port: int, count: int) -> None:
    """``count`` clients join ``bench/g``; prints ``ready``, then ``ROUND TIME`` when the
    last client got round ``ROUND``'s change (items named ``rROUND``)."""
    loop = asyncio.get_running_loop()
    got: dict[bytes, int] = {}
    joined = asyncio.Semaphore(0)
    for n in range(count):
        await loop.create_connection(lambda n=n: Subscriber(n, count, got, joined),
                                     "127.0.0.1", port)
    for _ in range(count):
        await joined.acquire()
    print("ready", flush=True)
    await asyncio.Event().wait()


def fan_out(sock: Path, clients: subprocess.Popen[str], rounds: int) -> list[float]:
    from iii_sdk import connect

    assert clients.stdout is not None
    latencies = []
    with connect(str(sock)) as client:
        for n in range(rounds):
            started = time.monotonic()
            client.trigger({"function_id": "stream::set", "payload": {
                "stream_name": "bench", "group_id": "g", "item_id": f"r{n}",
                "data": {"n": n, "title": "x" * 64}}})
            line = clients.stdout.readline().split()
            assert line[0] == str(n), line
            latencies.append((float(line[1]) - started) * 1000)
    return latencies


def cpu_s(pid: int) -> float:
    """CPU seconds a process has used (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def set_rate(sock: Path, calls: int, pid: int) -> tuple[float, float]:
    """``stream::set`` calls per second, and the daemon's CPU microseconds per call."""
    used = cpu_s(pid)
    rate: float = asyncio.run(throughput(sock, calls, lambda i: (
        "stream::set", {"stream_name": "bench", "group_id": "g", "item_id": f"t{i % 100}",
                        "data": {"n": i}})))
    return rate, (cpu_s(pid) - used) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--subscribers", nargs=2, type=int, metavar=("PORT", "COUNT"),
                        help=argparse.SUPPRESS)  # the clients' own process
    parser.add_argument("--json", type=Path, default=HERE / "results" / "stream_socket.json")
    args = parser.parse_args()
    if args.subscribers:
        asyncio.run(subscribers(*args.subscribers))
        return 0
    with tempfile.TemporaryDirectory(prefix="iii-streams-", dir="/tmp") as name:
        tmp = Path(name)
        port = free_port()
        daemon, sock = start_daemon(tmp, "d", "--streams-port", str(port),
                                    config="[streams]\nmax_clients = 100000\n")
        clients: subprocess.Popen[str] | None = None
        try:
            alone, alone_cpu = set_rate(sock, args.calls, daemon.pid)
            clients = subprocess.Popen(
                [sys.executable, __file__, "--subscribers", str(port), str(args.clients)],
                stdout=subprocess.PIPE, text=True, cwd=REPO,
                env=dict(os.environ, PYTHONPATH=str(REPO)))
            assert clients.stdout is not None
            if clients.stdout.readline().strip() != "ready":
                raise SystemExit("the clients did not join")
            latencies = sorted(fan_out(sock, clients, args.rounds))
            watched, watched_cpu = set_rate(sock, args.calls, daemon.pid)
        finally:
            if clients is not None:
                clients.kill()
                clients.wait(10)
            daemon.terminate()
            daemon.wait(30)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 \
        else [latencies[0]] * 99
    figures: dict[str, Any] = {
        "clients": args.clients,
        "fan_out_last_client_p50_ms": round(quantiles[49], 2),
        "fan_out_last_client_p99_ms": round(quantiles[98], 2),
        "set_per_s_no_subscribers": round(alone),
        "set_per_s_with_subscribers": round(watched),
        "ratio": round(watched / alone, 3),
        "daemon_cpu_us_per_set_no_subscribers": round(alone_cpu, 1),
        "daemon_cpu_us_per_set_with_subscribers": round(watched_cpu, 1),
    }
    print(f"stream::set -> the last of {args.clients} clients   p50 "
          f"{figures['fan_out_last_client_p50_ms']} ms, p99 "
          f"{figures['fan_out_last_client_p99_ms']} ms")
    print(f"stream::set, 64 in flight, nobody subscribed   "
          f"{figures['set_per_s_no_subscribers']:>8}/s")
    print(f"stream::set, 64 in flight, {args.clients} subscribed "
          f"{figures['set_per_s_with_subscribers']:>8}/s ({figures['ratio']}x)")
    print(f"daemon CPU per stream::set                     "
          f"{figures['daemon_cpu_us_per_set_no_subscribers']} us alone, "
          f"{figures['daemon_cpu_us_per_set_with_subscribers']} us with {args.clients} "
          f"subscribed")
    save(figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
