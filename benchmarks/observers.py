"""Routed calls with 1 000 observers on other functions, next to none, in the same run.

    python benchmarks/observers.py [--calls 10000] [--observers 1000] [--rounds 3]

The daemon and bench_worker.py as in run.py; a caller makes sync calls one at a time,
then pipelined void calls (bench_caller.py), first with no observer anywhere, then with
a client holding ``--observers`` active observers of functions nobody calls, rounds
alternating. A call nobody observes must pay nothing measurable (targets.md: >= 0.95x).
Writes JSON to benchmarks/results/observers.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from watchers import alternate, report  # noqa: E402


def hold(sock: str, count: int) -> None:
    """(child) Hold ``count`` active observers until stdin closes."""
    from iii_sdk import register_worker

    worker = register_worker(sock)
    worker.register_function("observed::target", lambda data: None)
    handles = [worker.observe({"function_id": f"observed::source-{i}",
                               "filters": {"input.amount": {"$gte": i}}},
                              "observed::target") for i in range(count)]
    for handle in handles:
        handle.ready(30)
    print("ready", flush=True)
    sys.stdin.read()
    worker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--observers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hold", nargs=2, metavar=("SOCKET", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold:
        hold(args.hold[0], int(args.hold[1]))
        return

    def attach(sock: Path, env: dict[str, str]) -> Callable[[], None]:
        holder = subprocess.Popen([sys.executable, __file__, "--hold", str(sock),
                                   str(args.observers)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"

        def stop() -> None:
            holder.communicate(timeout=30)  # its stdin closes: it disposes and ends
        return stop

    runs = alternate("iii-ob-", args.rounds, args.calls, f"{args.observers} obs", attach)
    report(runs, "observers.json", observers=args.observers)

if __name__ == "__main__":
    main()
