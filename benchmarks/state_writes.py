"""Writes through the store against a real daemon, before and after a change.

    python benchmarks/state_writes.py [--repo PATH] [--writes N]

Measures ``state::set`` one at a time (latency), pipelined (throughput: N calls in
one write, then every answer read), and how long another connection's ping takes while
the pipelined writes run (a store on the event loop stalls everyone). Prints one line
per figure next to the same figure for ``--repo`` (default: none), measured in the same
run, and writes JSON to benchmarks/results/state_writes.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from attacks import Daemon, Raw  # type: ignore[import-not-found]

HERE = Path(__file__).resolve().parent


def measure(repo: Path, writes: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="iii-bench-") as tmp:
        daemon = Daemon(repo, Path(tmp)).start()
        try:
            client = Raw(daemon.socket_path, timeout=60)
            latencies = []
            for i in range(500):
                started = time.perf_counter()
                answer = client.call("state::set", {"scope": "b", "key": f"k{i}", "value": i})
                latencies.append(time.perf_counter() - started)
                assert "error" not in answer, answer
            pings: list[float] = []
            done = threading.Event()

            def ping() -> None:
                other = Raw(daemon.socket_path)
                while not done.is_set():
                    pings.append(other.ping_s())
                other.close()

            pinger = threading.Thread(target=ping)
            pinger.start()
            frames = b"".join(json.dumps({
                "type": "invokefunction", "function_id": "state::set",
                "invocation_id": f"p{i}", "data": {"scope": "p", "key": f"k{i % 1000}",
                                                   "value": {"n": i}}}).encode() + b"\n"
                for i in range(writes))
            started = time.perf_counter()
            # Sent from a thread: the daemon stops reading a connection whose answers
            # are not read, and both would wait for each other.
            sender = threading.Thread(target=client.sock.sendall, args=(frames,))
            sender.start()
            answered = 0
            while answered < writes:
                message: dict[str, Any] = client.recv()
                if message.get("type") == "invocationresult":
                    assert "error" not in message, message
                    answered += 1
            elapsed = time.perf_counter() - started
            sender.join()
            done.set()
            pinger.join()
            client.close()
        finally:
            daemon.stop()
    pings.sort()
    return {"set_p50_us": statistics.median(latencies) * 1e6,
            "pipelined_sets_per_s": writes / elapsed,
            "ping_p99_ms_meanwhile": pings[int(len(pings) * 0.99)] * 1000 if pings else 0.0,
            "ping_max_ms_meanwhile": pings[-1] * 1000 if pings else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", type=Path, help="a checkout to compare with")
    parser.add_argument("--writes", type=int, default=20_000)
    args = parser.parse_args()
    ours = measure(HERE.parent, args.writes)
    theirs = measure(args.repo.resolve(), args.writes) if args.repo else None
    print(f"{'figure':32} {'this':>10} {'--repo':>10}")
    for name, value in ours.items():
        other = f"{theirs[name]:10.1f}" if theirs else f"{'-':>10}"
        print(f"{name:32} {value:10.1f} {other}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "state_writes.json").write_text(
        json.dumps({"this": ours, "repo": theirs}, indent=2))


if __name__ == "__main__":
    main()
