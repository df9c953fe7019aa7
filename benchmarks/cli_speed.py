"""How much a whole ``iii`` process costs, next to ``python -c pass`` in the same run.

    python benchmarks/cli_speed.py [--runs 30]

Starts a daemon and the example worker, then times whole processes (start to exit,
median of N) twice: with **default settings**, as a new user has them (no ``III_SOCKET``,
no config file: the socket is found in the user's runtime dir, here a private temp
``XDG_RUNTIME_DIR`` and ``HOME``), and with ``III_SOCKET`` set. Targets (targets.md):
``iii trigger FN --void`` <= 1.3 x python + 5 ms, ``iii trigger FN`` <= 1.3 x + 7 ms,
``iii list functions`` <= 1.5 x, typer commands <= 2.5 x. Uses the interpreter and the
console script directly, not a shell shim.
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

#: (name, argv after ``iii``, target as (factor, plus ms)).
COMMANDS: list[tuple[str, list[str], tuple[float, float]]] = [
    ("iii trigger FN --void", ["trigger", "math::add", "a=1", "b=2", "--void"], (1.3, 5)),
    ("iii trigger FN", ["trigger", "math::add", "a=1", "b=2"], (1.3, 7)),
    ("iii list functions", ["list", "functions"], (1.5, 0)),
    ("iii --version", ["--version"], (2.5, 0)),
    ("iii daemon status", ["daemon", "status"], (2.5, 0)),
    ("iii queue list", ["queue", "list"], (2.5, 0)),
]


def timed(command: list[str], runs: int, env: dict[str, str]) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(command, stdout=subprocess.DEVNULL, env=env)
        samples.append((time.perf_counter() - started) * 1000)
        if proc.returncode != 0:
            raise SystemExit(f"{command} exited with {proc.returncode}")
    return statistics.median(samples)


def default_env(tmp: str) -> dict[str, str]:
    """A new user's environment: nothing of ours set, a runtime dir and a home of their
    own (temp dirs, so the user's real daemon is never touched)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    runtime = Path(tmp) / "run"
    runtime.mkdir(mode=0o700)
    home = Path(tmp) / "home"
    home.mkdir()
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env.pop(name, None)
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime), III_WS_PORT="0",
               III_HTTP_PORT="0")
    return env


def measure(env: dict[str, str], socket_path: Path, runs: int) -> dict[str, float]:
    script = Path(sys.executable).parent / "iii"
    daemon = subprocess.Popen([sys.executable, "-m", "iii_daemon"], env=env,
                              stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit(f"the daemon did not listen on {socket_path}")
            time.sleep(0.02)
        worker = subprocess.Popen([sys.executable, str(REPO / "examples" / "math_worker.py")],
                                  env=env, stdout=subprocess.PIPE, text=True)
        assert worker.stdout is not None and "ready" in worker.stdout.readline()
        figures = {"python -c pass": timed([sys.executable, "-c", "pass"], runs, env)}
        for name, argv, _ in COMMANDS:
            figures[name] = timed([str(script), *argv], runs, env)
        return figures
    finally:
        for proc in (worker, daemon):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    if not (Path(sys.executable).parent / "iii").exists():
        raise SystemExit("no iii console script beside this python: pip install -e . first")
    with tempfile.TemporaryDirectory(prefix="iii-cli-", dir="/tmp") as tmp:
        env = default_env(tmp)
        socket_path = Path(tmp) / "run" / "iii" / "iii.sock"
        default = measure(env, socket_path, args.runs)
        env_socket = measure(dict(env, III_SOCKET=str(socket_path)), socket_path, args.runs)
    report: dict[str, object] = {"runs": args.runs, "figures": {}}
    print(f"{'process':24} {'default ms':>10} {'ratio':>6} {'target':>8} {'met':>4}"
          f"   {'III_SOCKET ms':>13}")
    for name in default:
        base = default["python -c pass"]
        target = next(((f, plus) for n, _, (f, plus) in COMMANDS if n == name), None)
        limit = None if target is None else target[0] * base + target[1]
        met = "" if limit is None else ("yes" if default[name] <= limit else "NO")
        print(f"{name:24} {default[name]:>10.1f} {default[name] / base:>5.2f}x "
              f"{'' if limit is None else f'{limit:.1f}':>8} {met:>4}   "
              f"{env_socket[name]:>13.1f}")
        report["figures"][name] = {  # type: ignore[index]
            "default_ms": default[name], "iii_socket_ms": env_socket[name],
            "ratio": default[name] / base, "target_ms": limit}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
