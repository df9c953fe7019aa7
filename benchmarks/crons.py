"""Triggers at scale: N every-second crons (or N state triggers on one scope, changed
once a second) into one worker.

    python benchmarks/crons.py [--crons 10000] [--kind cron|state] [--seconds 10] [--repo PATH]

A daemon of ``--repo``, one worker (our SDK, an async handler that counts) serving the
crons' function, N ``* * * * * *`` crons bound by that worker, and another worker
serving an echo. Reports, over ``--seconds``: firings per second against the N
expected, the daemon's CPU (share of one core), and another client's sync calls of the
echo, p50/p99, next to the same figures before the crons were bound (the idle baseline,
same run). Target (targets.md): all
fire, the daemon under 25 % of a core, others' p99 within 2x idle.
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

WORKER = """
import sys, threading
from iii_sdk import register_worker
w = register_worker(sys.argv[1])
if sys.argv[2] == "echo":  # the other worker: what another client's calls go to
    async def echo(data):
        return data
    w.register_function("bench::echo", echo)
    w.ping()
    print("ready", flush=True)
    threading.Event().wait()
fired = [0]
async def tick(data):
    fired[0] += 1
async def count(data):
    return fired[0]
w.register_function("bench::tick", tick)
w.register_function("bench::count", count)
w.ping()
print("ready", flush=True)
for line in sys.stdin:  # one line: bind that many triggers of that kind
    count, kind = line.split()
    config = {"expression": "* * * * * *"} if kind == "cron" else {"scope": "bench"}
    for i in range(int(count)):
        w.register_trigger({"type": kind, "function_id": "bench::tick", "id": f"c{i}",
                            "config": config})
    w.ping(60)
    print("bound", flush=True)
threading.Event().wait()
"""


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _latencies(client: Any, seconds: float) -> list[float]:
    """Sync calls of bench::echo every 10 ms for ``seconds``: their latencies in ms."""
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        client.trigger({"function_id": "bench::echo", "payload": 1})
        samples.append((time.perf_counter() - started) * 1000)
        time.sleep(0.01)
    return samples


def _p(samples: list[float], q: float) -> float:
    return round(statistics.quantiles(samples, n=100)[int(q) - 1], 3)


def _change_every_second(client: Any, stop: Any) -> None:
    """A state change a second on the scope the state triggers watch."""
    n = 0
    while not stop.wait(1.0 - time.monotonic() % 1.0):
        n += 1
        client.trigger({"function_id": "state::set",
                        "payload": {"scope": "bench", "key": "k", "value": n}})


def measure(repo: Path, crons: int, seconds: float, kind: str = "cron") -> dict[str, Any]:
    sys.path.insert(0, str(repo))
    from iii_sdk import connect

    with tempfile.TemporaryDirectory(prefix="iii-crons-", dir="/tmp") as name:
        tmp = Path(name)
        sock = tmp / "s.sock"
        env = dict(os.environ, PYTHONPATH=str(repo), III_CONFIG=str(tmp / "c.toml"),
                   III_WS_PORT="0", III_HTTP_PORT="0")
        daemon = subprocess.Popen([sys.executable, "-m", "iii_daemon", "--socket", str(sock),
                                   "--data-dir", str(tmp / "data")], env=env, cwd=repo,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        workers: list[subprocess.Popen[str]] = []
        try:
            while not sock.exists():
                time.sleep(0.02)
            for mode in ("echo", "ticks"):
                workers.append(subprocess.Popen(
                    [sys.executable, "-c", WORKER, str(sock), mode], env=env, cwd=repo,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
                assert workers[-1].stdout is not None
                assert "ready" in workers[-1].stdout.readline()
            worker = workers[-1]
            assert worker.stdin is not None and worker.stdout is not None
            client = connect(str(sock))
            idle = _latencies(client, min(seconds, 5))
            worker.stdin.write(f"{crons} {kind}\n")
            worker.stdin.flush()
            assert "bound" in worker.stdout.readline()
            if kind == "state":
                import threading

                stop = threading.Event()
                changer = threading.Thread(target=_change_every_second,
                                           args=(connect(str(sock)), stop), daemon=True)
                changer.start()
            time.sleep(2)  # the first ticks
            before = client.trigger({"function_id": "bench::count", "payload": None})
            cpu_before = _cpu_s(daemon.pid)
            started = time.monotonic()
            busy = _latencies(client, seconds)
            elapsed = time.monotonic() - started
            cpu = _cpu_s(daemon.pid) - cpu_before
            fired = client.trigger({"function_id": "bench::count", "payload": None}) - before
            if kind == "state":
                stop.set()
            client.shutdown()
        finally:
            for proc in workers:
                proc.kill()
            daemon.terminate()
            daemon.wait(30)
    return {"kind": kind, "crons": crons, "seconds": round(elapsed, 1),
            "firings_per_s": round(fired / elapsed, 1),
            "daemon_cpu_share": round(cpu / elapsed, 3),
            "others_p50_ms": {"idle": _p(idle, 50), "with_crons": _p(busy, 50)},
            "others_p99_ms": {"idle": _p(idle, 99), "with_crons": _p(busy, 99)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crons", type=int, default=10_000)
    parser.add_argument("--kind", choices=["cron", "state"], default="cron",
                        help="every-second crons, or state triggers on one scope changed "
                             "once a second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repo", type=Path, default=HERE.parent)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "crons.json")
    args = parser.parse_args()
    figures = measure(args.repo.resolve(), args.crons, args.seconds, args.kind)
    what = "every-second crons" if args.kind == "cron" else \
        "state triggers on one scope, one change a second"
    print(f"{args.crons} {what}, {figures['seconds']} s")
    print(f"  firings/s          {figures['firings_per_s']:>10}   (all: {args.crons})")
    print(f"  daemon CPU         {figures['daemon_cpu_share']:>10.1%}   (target < 25 %)")
    for q in ("p50", "p99"):
        row = figures[f"others_{q}_ms"]
        print(f"  others' {q} ms     {row['with_crons']:>10}   idle {row['idle']}"
              f" ({row['with_crons'] / row['idle']:.1f}x; target p99 <= 2x)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    out = args.json if args.kind == "cron" else args.json.with_name("state_triggers.json")
    out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
