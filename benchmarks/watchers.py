"""Routed calls with watchers attached, next to none, measured in the same run.

    python benchmarks/watchers.py [--calls 10000] [--rounds 5]

The daemon and bench_worker.py as in run.py; a caller makes sync calls one at a time,
then pipelined void calls, first with nobody watching, then with one TUI (headless,
tui_headless.py) and one ``iii watch -o jsonl`` following everything, rounds
alternating. Reports calls/s for each and the ratio (targets.md: >= 0.8x, goal 0.9x).
Writes JSON to benchmarks/results/watchers.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from run import start_daemon  # noqa: E402


def calls(sock: Path, count: int, env: dict[str, str]) -> dict[str, float]:
    """bench_caller.py's sync and void figures (``count`` sync, 5 x as many voids)."""
    out = subprocess.run([sys.executable, str(HERE / "bench_caller.py"), str(sock),
                          str(count), str(count * 5)], capture_output=True, text=True,
                         env=env, cwd=REPO, check=True, timeout=600)
    figures: dict[str, float] = json.loads(out.stdout)
    return figures


def watchers(sock: Path, env: dict[str, str]) -> list[subprocess.Popen[str]]:
    """One TUI (headless) and one ``iii watch -o jsonl`` to /dev/null, both following."""
    iii = shutil.which("iii") or str(Path(sys.executable).parent / "iii")
    tui = subprocess.Popen([sys.executable, str(HERE / "tui_headless.py"), str(sock)],
                           stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    assert tui.stdout is not None and tui.stdout.readline().strip() == "ready"
    watch = subprocess.Popen([iii, "watch", "--socket", str(sock), "-o", "jsonl",
                              "--replay", "0"], stdout=subprocess.DEVNULL, text=True,
                             env=env)
    time.sleep(1.0)  # subscribed (it prints nothing until the first event)
    return [tui, watch]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    def attach(sock: Path, env: dict[str, str]) -> Callable[[], None]:
        attached = watchers(sock, env)

        def stop() -> None:
            for proc in attached:
                proc.terminate()
                proc.wait(10)
        return stop

    report(alternate("iii-wb-", args.rounds, args.calls, "watched", attach), "watchers.json")


def alternate(prefix: str, rounds: int, count: int, name: str,
              attach: Callable[[Path, dict[str, str]], Callable[[], None]]
              ) -> dict[str, list[dict[str, float]]]:
    """A daemon and bench_worker.py; then ``rounds`` times sync and void calls with
    nothing attached (``none``), and with what ``attach(sock, env)`` starts (``name``;
    it returns how to stop it)."""
    runs: dict[str, list[dict[str, float]]] = {"none": [], name: []}
    with tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp") as tmp:
        daemon, sock, env = start_daemon(Path(tmp))
        worker = None
        try:
            worker = subprocess.Popen([sys.executable, str(HERE / "bench_worker.py"),
                                       str(sock)], stdout=subprocess.PIPE, text=True,
                                      env=env)
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
            for _ in range(rounds):
                for kind in runs:
                    stop = attach(sock, env) if kind == name else None
                    try:
                        figures = calls(sock, count, env)
                        runs[kind].append({key: figures[key] for key in
                                           ("sync_calls_per_s", "void_calls_per_s")})
                    finally:
                        if stop is not None:
                            stop()
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(10)
            daemon.terminate()
            daemon.wait(10)
    return runs


def report(runs: dict[str, list[dict[str, float]]], file_name: str, **extra: Any) -> None:
    """Print the medians of two kinds of rounds (first: the baseline) side by side with
    their ratio, and write every round to benchmarks/results/FILE_NAME."""
    medians: dict[str, dict[str, Any]] = {
        name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        for name, rounds in runs.items()}
    base, other = list(runs)
    print(f"{'figure':36} {base:>10} {other:>10} {'ratio':>7}")
    for key, label in (("sync_calls_per_s", "sync calls/s, 1 in flight"),
                       ("void_calls_per_s", "void calls/s, pipelined")):
        none, watched = medians[base][key], medians[other][key]
        print(f"{label:36} {none:10.0f} {watched:10.0f} {watched / none:6.2f}x")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / file_name).write_text(json.dumps(
        {**extra, "rounds": runs, "median": medians}, indent=2))

if __name__ == "__main__":
    main()
