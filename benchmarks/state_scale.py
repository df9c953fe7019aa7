"""State at scale: a daemon's resident memory and start-up time with many state keys.

    python benchmarks/state_scale.py [--keys 1000000] [--value-bytes 100] [--repo PATH]

Writes ``--keys`` state rows (``--value-bytes`` of JSON each) straight into a fresh data
dir's SQLite file, in the daemon's own schema (the daemon of ``--repo`` creates it),
then starts that daemon on it and reports: seconds until its socket answers, its RSS
then, and the store's size on disk. The baseline next to each figure is the same daemon
on an empty data dir, measured in the same run (targets.md: RSS <= 400 MiB and start <=
3 s at 1 000 000 keys of 100 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _answers(path: Path) -> bool:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(1)
    try:
        sock.connect(str(path))
        return bool(sock.recv(1))  # its greeting: it serves, not just listens
    except OSError:
        return False
    finally:
        sock.close()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(repo: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], float]:
    """The daemon of ``repo`` on ``tmp``; seconds until it answers."""
    sock = tmp / "s.sock"
    env = dict(os.environ, PYTHONPATH=str(repo), III_CONFIG=str(tmp / "c.toml"),
               III_WS_PORT="0", III_HTTP_PORT="0")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "iii_daemon", "--socket", str(sock),
                             "--data-dir", str(tmp / "data")], env=env, cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not _answers(sock):
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}")
        if time.monotonic() - started > 300:
            raise RuntimeError("the daemon did not answer within 300 s")
        time.sleep(0.01)
    return proc, time.monotonic() - started


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(60)


def fill(db: Path, keys: int, value_bytes: int) -> None:
    value = json.dumps({"v": "x" * max(0, value_bytes - 8)})  # value_bytes of JSON
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO state VALUES (?, ?, ?)",
                         ((f"scope{i % 100}", f"key{i:08d}", value) for i in range(keys)))


def measure(repo: Path, keys: int, value_bytes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="iii-scale-", dir="/tmp") as name:
        tmp = Path(name)
        proc, empty_s = start(repo, tmp)  # creates the schema
        empty_rss = _rss_mib(proc.pid)
        stop(proc)
        fill(tmp / "data" / "iii.db", keys, value_bytes)
        disk = sum(f.stat().st_size for f in (tmp / "data").glob("iii.db*")) / 2**20
        proc, loaded_s = start(repo, tmp)
        loaded_rss = _rss_mib(proc.pid)
        stop(proc)
    return {"keys": keys, "value_bytes": value_bytes,
            "start_s": {"empty": round(empty_s, 2), "loaded": round(loaded_s, 2)},
            "rss_mib": {"empty": round(empty_rss, 1), "loaded": round(loaded_rss, 1)},
            "disk_mib": round(disk, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--repo", type=Path, default=HERE.parent)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "state_scale.json")
    args = parser.parse_args()
    figures = measure(args.repo.resolve(), args.keys, args.value_bytes)
    print(f"{'figure':36} {'empty':>10} {f'{args.keys} keys':>14}  target")
    print(f"{'start to an answering socket (s)':36} {figures['start_s']['empty']:>10} "
          f"{figures['start_s']['loaded']:>14}  <= 3")
    print(f"{'resident memory (MiB)':36} {figures['rss_mib']['empty']:>10} "
          f"{figures['rss_mib']['loaded']:>14}  <= 400")
    print(f"{'store on disk (MiB)':36} {'':>10} {figures['disk_mib']:>14}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
