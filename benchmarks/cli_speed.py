"""How much a whole ``iii trigger`` process costs, next to ``python -c pass``.

    python benchmarks/cli_speed.py [--runs 30]

Starts a daemon and the example worker on a temp socket, then times whole processes
(start to exit, median of N): the bare interpreter, ``iii trigger FN --void`` and
``iii trigger FN``. Targets (targets.md): void <= 1.5 x baseline + 10 ms, sync <= 1.5 x
baseline + 12 ms. Uses the interpreter and console script directly, not a shell shim.
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


def timed(command: list[str], runs: int, env: dict[str, str]) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(command, stdout=subprocess.DEVNULL, env=env)
        samples.append((time.perf_counter() - started) * 1000)
        if proc.returncode != 0:
            raise SystemExit(f"{command} exited with {proc.returncode}")
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    script = Path(sys.executable).parent / "iii"
    if not script.exists():
        raise SystemExit(f"no console script at {script}: pip install -e . first")
    with tempfile.TemporaryDirectory(prefix="iii-cli-", dir="/tmp") as tmp:
        env = dict(os.environ, III_SOCKET=f"{tmp}/iii.sock", III_DATA_DIR=f"{tmp}/data",
                   III_CONFIG=f"{tmp}/config.toml")
        daemon = subprocess.Popen([sys.executable, "-m", "iii_daemon", "--ws-port", "0",
                                   "--http-port", "0"], env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not Path(f"{tmp}/iii.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        worker = subprocess.Popen([sys.executable, str(REPO / "examples" / "math_worker.py")],
                                  env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert worker.stdout is not None and "ready" in worker.stdout.readline()
            call = [str(script), "trigger", "math::add", "a=1", "b=2"]
            baseline = timed([sys.executable, "-c", "pass"], args.runs, env)
            void = timed([*call, "--void"], args.runs, env)
            sync = timed(call, args.runs, env)
        finally:
            worker.terminate()
            daemon.terminate()
            worker.wait(10)
            daemon.wait(10)
    rows = [("python -c pass", baseline, None),
            ("iii trigger FN --void", void, 1.5 * baseline + 10),
            ("iii trigger FN", sync, 1.5 * baseline + 12)]
    print(f"{'process':24} {'median ms':>10} {'target ms':>10}")
    for name, value, target in rows:
        print(f"{name:24} {value:>10.1f} {'' if target is None else f'{target:.1f}':>10}")
    print(json.dumps({"runs": args.runs, "python_c_pass_ms": baseline, "trigger_void_ms": void,
                      "trigger_sync_ms": sync, "void_target_ms": 1.5 * baseline + 10,
                      "sync_target_ms": 1.5 * baseline + 12}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
