"""``iii trigger --batch`` against the SDK doing the same calls, in one run.

    python benchmarks/cli_batch.py [--calls 10000] [--rounds 5]

Starts a daemon and the benchmark worker on a temp socket, then times, alternating:
the whole ``iii trigger bench::tally --void --batch FILE`` process (start to exit, every
hand-off acknowledged and printed), and the SDK in one process making the same void calls
and then one sync call (answered after every void was routed: frames on one connection
are handled in order), timed from its first call. Target (targets.md): batch <= 2 x SDK.

``bench::tally`` is an async handler that counts its calls, so every call of both columns
runs (checked after each), where a sync handler's ``max_concurrency`` would refuse most of
a burst ``worker_busy``: then the faster column would also be the one whose worker did
less.
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

REPO = Path(__file__).resolve().parent.parent

SDK_CALLER = """
import sys, time
from iii_sdk import TriggerAction, register_worker
worker = register_worker(sys.argv[1])
worker.ping()
count = int(sys.argv[2])
started = time.perf_counter()
for n in range(count):
    worker.trigger({"function_id": "bench::tally", "payload": {"a": n, "b": 1},
                    "action": TriggerAction.Void()})
worker.trigger({"function_id": "engine::status"})
print(time.perf_counter() - started)
worker.shutdown()
"""


def wait_for_tally(script: Path, env: dict[str, str], count: int) -> int:
    """The calls bench::tally ran, once it reaches ``count`` (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        done = subprocess.run([str(script), "trigger", "bench::total"], env=env,
                              capture_output=True, text=True, check=True)
        ran = int(done.stdout)
        if ran >= count or time.monotonic() > deadline:
            return ran
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    script = Path(sys.executable).parent / "iii"
    with tempfile.TemporaryDirectory(prefix="iii-batch-", dir="/tmp") as tmp:
        sock = f"{tmp}/iii.sock"
        env = dict(os.environ, III_SOCKET=sock, III_DATA_DIR=f"{tmp}/data",
                   III_CONFIG=f"{tmp}/config.toml", III_WS_PORT="0", III_HTTP_PORT="0")
        lines = Path(tmp) / "calls.jsonl"
        lines.write_text("".join(json.dumps({"a": n, "b": 1}) + "\n"
                                 for n in range(args.calls)))
        daemon = subprocess.Popen([sys.executable, "-m", "iii_daemon", "--log-level",
                                   "WARNING"], env=env)
        worker = None
        try:
            deadline = time.monotonic() + 10
            while not Path(sock).exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            worker = subprocess.Popen([sys.executable, str(REPO / "benchmarks" /
                                                        "bench_worker.py"), sock],
                                      env=env, stdout=subprocess.PIPE, text=True)
            assert worker.stdout is not None and "ready" in worker.stdout.readline()
            batch, sdk = [], []
            for _ in range(args.rounds):
                started = time.perf_counter()
                done = subprocess.run([str(script), "trigger", "bench::tally", "--void",
                                       "--batch", str(lines)], env=env, capture_output=True,
                                      text=True, check=True)
                batch.append(time.perf_counter() - started)
                assert done.stdout.count("\n") == args.calls, done.stdout[-200:]
                out = subprocess.run([sys.executable, "-c", SDK_CALLER, sock,
                                      str(args.calls)], env=env, capture_output=True,
                                     text=True, check=True)
                sdk.append(float(out.stdout.strip()))
                ran = wait_for_tally(script, env, 2 * args.calls * len(sdk))
                assert ran == 2 * args.calls * len(sdk), f"{ran} calls ran"
        finally:
            for proc in (worker, daemon):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
    batch_s, sdk_s = statistics.median(batch), statistics.median(sdk)
    print(f"{args.calls} void calls, median of {args.rounds}")
    print(f"  iii trigger --batch (whole process)  {batch_s * 1000:8.1f} ms")
    print(f"  SDK, one process (calls only)        {sdk_s * 1000:8.1f} ms")
    print(f"  ratio {batch_s / sdk_s:.2f}x (target <= 2x)")
    print(json.dumps({"calls": args.calls, "rounds": args.rounds, "batch_s": batch_s,
                      "sdk_s": sdk_s, "ratio": batch_s / sdk_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
