"""A bridge's cost: a forwarded call next to the same call made directly on the other
engine (same run).

    python benchmarks/bridge.py [--samples 2000]

Starts daemon B (a worker on it serves ``b::echo``) and daemon A, bridged to B with
``remote::echo`` forwarded to ``b::echo``; then one client calls, one call at a time,
``b::echo`` on B directly and ``remote::echo`` on A, and reports p50/p99 of each and
the ratio of the p50s (aim: at most 1.5x).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from daemons import save, start_daemon, stop  # type: ignore[import-not-found]  # noqa: E402
from http_trigger import free_port  # type: ignore[import-not-found]  # noqa: E402


def _latencies(socket_path: Path, function_id: str, samples: int) -> list[float]:
    from iii_sdk import connect

    out = []
    with connect(str(socket_path)) as client:
        for n in range(50):  # warm up
            client.trigger({"function_id": function_id, "payload": {"n": n}})
        for n in range(samples):
            started = time.perf_counter()
            client.trigger({"function_id": function_id, "payload": {"n": n}})
            out.append((time.perf_counter() - started) * 1000)
    return sorted(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "bridge.json")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from iii_sdk import register_worker

    with tempfile.TemporaryDirectory(prefix="iii-bridge-", dir="/tmp") as name:
        tmp = Path(name)
        port = free_port()
        b, _ = start_daemon(tmp, "b", "--ws-port", str(port))
        a, _ = start_daemon(tmp, "a", config=f'[bridge]\nurl = "ws://127.0.0.1:{port}"\n'
                                              'forward = [{ local_function = "remote::echo", '
                                              'remote_function = "b::echo" }]\n')
        worker = register_worker(str(tmp / "b.sock"))
        try:
            worker.register_function("b::echo", lambda data: data)
            worker.ping()
            direct = _latencies(tmp / "b.sock", "b::echo", args.samples)
            bridged = _latencies(tmp / "a.sock", "remote::echo", args.samples)
        finally:
            worker.shutdown()
            stop(a, b)

    def quantiles(values: list[float]) -> tuple[float, float]:
        cuts = statistics.quantiles(values, n=100)
        return round(cuts[49], 3), round(cuts[98], 3)

    (d50, d99), (b50, b99) = quantiles(direct), quantiles(bridged)
    figures = {"direct_p50_ms": d50, "direct_p99_ms": d99, "bridged_p50_ms": b50,
               "bridged_p99_ms": b99, "p50_ratio": round(b50 / d50, 3)}
    print(f"b::echo on B directly        p50 {d50} ms, p99 {d99} ms")
    print(f"remote::echo on A (bridged)  p50 {b50} ms, p99 {b99} ms")
    print(f"p50 ratio                    {figures['p50_ratio']}x (aim <= 1.5x)")
    save(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
