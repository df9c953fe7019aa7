"""Run the call benchmarks against the baseline relay and the daemon, in one run.

    python benchmarks/run.py [--calls 20000] [--voids 100000] [--rounds 3]

Prints a table and writes JSON to benchmarks/results/latest.json. Each figure is shown
next to the relay measured in the same run, and as a ratio to it (targets.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _wait_for_socket(path: Path, proc: subprocess.Popen[Any]) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(str(path))
            return
        except OSError:
            time.sleep(0.02)
        finally:
            sock.close()
    raise SystemExit(f"server did not listen on {path}")


def start_daemon(tmp: Path) -> tuple[subprocess.Popen[bytes], Path, dict[str, str]]:
    """A daemon on a socket in ``tmp`` (no TCP listeners), answering; with its socket
    and the environment its clients should get."""
    sock = tmp / "iii.sock"
    env = dict(os.environ, PYTHONPATH=str(REPO), III_CONFIG=str(tmp / "c.toml"))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "iii_daemon", "--socket", str(sock), "--data-dir",
         str(tmp / "data"), "--ws-port", "0", "--http-port", "0", "--log-level", "WARNING"],
        env=env, cwd=REPO)
    _wait_for_socket(sock, daemon)
    return daemon, sock, env


def measure(server: str, calls: int, voids: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="iii-bench-", dir="/tmp") as tmp:
        path = Path(tmp) / "s.sock"
        if server == "relay":
            command = [sys.executable, str(HERE / "relay.py"), str(path)]
        else:
            command = [sys.executable, "-m", "iii_daemon", "--socket", str(path),
                       "--data-dir", str(Path(tmp) / "data"), "--ws-port", "0",
                       "--http-port", "0", "--log-level", "WARNING"]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        srv = subprocess.Popen(command, env=env, cwd=REPO)
        worker = None
        try:
            _wait_for_socket(path, srv)
            worker = subprocess.Popen([sys.executable, str(HERE / "bench_worker.py"),
                                       str(path)], stdout=subprocess.PIPE, text=True,
                                      env=env, cwd=REPO)
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
            out = subprocess.run([sys.executable, str(HERE / "bench_caller.py"), str(path),
                                  str(calls), str(voids)], capture_output=True, text=True,
                                 env=env, cwd=REPO, check=True, timeout=600)
            result: dict[str, Any] = json.loads(out.stdout)
            return result
        finally:
            for proc in (worker, srv):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)


FIGURES = [
    ("sync_calls_per_s", "sync calls/s, 1 in flight", "higher"),
    ("sync_p50_us", "sync latency p50 (µs)", "lower"),
    ("sync_p99_us", "sync latency p99 (µs)", "lower"),
    ("pipelined_calls_per_s", "sync calls/s, 256 in flight", "higher"),
    ("void_calls_per_s", "void calls/s, fire and forget", "higher"),
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--voids", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating relay/daemon rounds; the median is reported")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "latest.json",
                        help="where the JSON report goes")
    args = parser.parse_args()

    runs: dict[str, list[dict[str, Any]]] = {"relay": [], "daemon": []}
    for _ in range(args.rounds):
        for server in ("relay", "daemon"):
            runs[server].append(measure(server, args.calls, args.voids))
    median = {server: {key: statistics.median(r[key] for r in results)
                       for key, *_ in FIGURES} for server, results in runs.items()}

    print(f"{'figure':34} {'relay':>10} {'daemon':>10} {'ratio':>7}")
    report: dict[str, Any] = {"machine": platform.platform(), "python": sys.version.split()[0],
                              "calls": args.calls, "voids": args.voids,
                              "rounds": args.rounds, "figures": {}}
    for key, label, better in FIGURES:
        relay, daemon = median["relay"][key], median["daemon"][key]
        ratio = daemon / relay if better == "higher" else relay / daemon
        print(f"{label:34} {relay:>10.1f} {daemon:>10.1f} {ratio:>6.2f}x")
        report["figures"][key] = {"relay": relay, "daemon": daemon,
                                  "ratio_of_baseline": ratio}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
