"""The TUI under a flood of events: 20 000 events/s for 10 s (targets.md).

    python benchmarks/tui_flood.py [--rate 20000] [--seconds 10]

A daemon, bench_worker.py, the TUI headless (tui_headless.py, pressing a key every
0.5 s), and a caller sending void calls at ``--rate`` per second (each is one
``invocation.finished`` event). Reports the slowest keypress (target < 200 ms), the
TUI's memory, and the rate actually sent. Writes benchmarks/results/tui_flood.json.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from run import start_daemon  # noqa: E402


def flood(path: Path, rate: int, seconds: float) -> float:
    """Void calls at ``rate`` per second for ``seconds``; returns the rate achieved."""
    frame = (json.dumps({"type": "invokefunction", "function_id": "bench::tally",
                         "data": 1, "action": {"type": "void"}}) + "\n").encode()
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(path))
    sent, started = 0, time.perf_counter()
    batch = 200
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate)
        if sent < due:
            sock.sendall(frame * batch)
            sent += batch
        else:
            time.sleep(batch / rate / 4)
    sock.close()
    return sent / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="iii-tf-", dir="/tmp") as tmp:
        daemon, sock, env = start_daemon(Path(tmp))
        procs: list[subprocess.Popen[str]] = []
        try:
            for script, extra in (("bench_worker.py", []), ("tui_headless.py",
                                                            ["--flood-report"])):
                proc = subprocess.Popen([sys.executable, str(HERE / script), str(sock),
                                         *extra], stdout=subprocess.PIPE, text=True,
                                        env=env, cwd=REPO)
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
                procs.append(proc)
            achieved = flood(sock, args.rate, args.seconds)
            tui = procs[1]
            tui.send_signal(signal.SIGTERM)
            out, _ = tui.communicate(timeout=30)
            figures = json.loads(out.strip().splitlines()[-1])
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)
            daemon.terminate()
            daemon.wait(10)
    figures["events_per_s_sent"] = achieved
    print(f"{'figure':36} {'value':>10}")
    print(f"{'events/s sent (void calls)':36} {achieved:10.0f}")
    print(f"{'slowest keypress (ms, target < 200)':36} {figures['slowest_keypress_ms']:10.1f}")
    print(f"{'keypresses measured':36} {figures['presses']:10d}")
    print(f"{'TUI max RSS (MiB)':36} {figures['max_rss_kib'] / 1024:10.1f}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "tui_flood.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
