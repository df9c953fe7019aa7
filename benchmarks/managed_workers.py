"""Managed workers: what supervising costs the daemon, and what a flooding worker costs
everyone else, each next to a baseline measured in the same run.

    python benchmarks/managed_workers.py [--idle 20] [--seconds 8]

1. The daemon's CPU over ``--seconds`` with ``--idle`` managed example workers (idle,
   connected), next to the same daemon running none.
2. Sync calls of ``math::add`` (one at a time, from an SDK client) while another managed
   worker writes to stdout as fast as it can: p50/p99 and the daemon's CPU, next to the
   same calls with no flood. Also how much log the flood left on disk (capped).
"""

from __future__ import annotations

import argparse
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
REPO = HERE.parent
MATH = [sys.executable, str(REPO / "examples" / "math_worker.py")]
FLOOD = "import sys\nline = b'x' * 1023 + b'\\n'\nwhile True:\n    sys.stdout.buffer.write(line)\n"


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _daemon(tmp: Path, workers: list[dict[str, Any]]) -> subprocess.Popen[bytes]:
    import tomli_w

    (tmp / "c.toml").write_text(tomli_w.dumps({"workers": workers}))
    env = dict(os.environ, PYTHONPATH=str(REPO), III_CONFIG=str(tmp / "c.toml"),
               III_LOG_DIR=str(tmp / "log"), III_WS_PORT="0", III_HTTP_PORT="0")
    daemon = subprocess.Popen([sys.executable, "-m", "iii_daemon", "--socket",
                               str(tmp / "s.sock"), "--data-dir", str(tmp / "data"),
                               "--log-level", "WARNING"], env=env, cwd=REPO)
    while not (tmp / "s.sock").exists():
        time.sleep(0.02)
    return daemon


def _wait_connected(client: Any, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = client.trigger({"function_id": "engine::managed::list", "payload": {}})
        if sum(1 for r in rows["workers"] if r["connections"]) >= count:
            return
        time.sleep(0.1)
    raise SystemExit("the managed workers did not connect")


def idle_cost(idle: int, seconds: float) -> dict[str, float]:
    from iii_sdk import connect

    shares = {}
    for label, count in (("none", 0), (f"{idle} idle", idle)):
        with tempfile.TemporaryDirectory(prefix="iii-mw-", dir="/tmp") as name:
            tmp = Path(name)
            daemon = _daemon(tmp, [{"name": f"w{i}", "command": MATH}
                                   for i in range(count)])
            try:
                with connect(str(tmp / "s.sock")) as client:
                    _wait_connected(client, count)
                time.sleep(1)  # past the start-up
                before, started = _cpu_s(daemon.pid), time.monotonic()
                time.sleep(seconds)
                shares[label] = (_cpu_s(daemon.pid) - before) / (time.monotonic() - started)
            finally:
                daemon.terminate()
                daemon.wait(60)
    return shares


def _latencies(client: Any, seconds: float) -> list[float]:
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        client.trigger({"function_id": "math::add", "payload": {"a": 1, "b": 2}})
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def flood_cost(seconds: float) -> dict[str, Any]:
    from iii_sdk import connect

    figures: dict[str, Any] = {}
    for label, flood in (("no flood", False), ("flood", True)):
        workers = [{"name": "math", "command": MATH}]
        if flood:
            workers.append({"name": "flood", "command": [sys.executable, "-c", FLOOD]})
        with tempfile.TemporaryDirectory(prefix="iii-mw-", dir="/tmp") as name:
            tmp = Path(name)
            daemon = _daemon(tmp, workers)
            try:
                with connect(str(tmp / "s.sock")) as client:
                    _wait_connected(client, 1)
                    time.sleep(1)
                    before, started = _cpu_s(daemon.pid), time.monotonic()
                    samples = _latencies(client, seconds)
                    cpu = (_cpu_s(daemon.pid) - before) / (time.monotonic() - started)
                logged = sum(p.stat().st_size for p in (tmp / "log" / "workers").glob("*"))
            finally:
                daemon.terminate()
                daemon.wait(60)
        quantiles = statistics.quantiles(samples, n=100)
        figures[label] = {"calls": len(samples), "p50_ms": round(quantiles[49], 3),
                          "p99_ms": round(quantiles[98], 3), "daemon_cpu": round(cpu, 3),
                          "log_bytes": logged}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "managed.json")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    idle = idle_cost(args.idle, args.seconds)
    flood = flood_cost(args.seconds)
    for label, share in idle.items():
        print(f"daemon CPU, {label:>8} managed workers   {share:7.2%}")
    for label, row in flood.items():
        print(f"math::add while {label:>8}: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
              f"daemon CPU {row['daemon_cpu']:.1%}, logs on disk {row['log_bytes']} bytes")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"idle_cpu": idle, "flood": flood}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
