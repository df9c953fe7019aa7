"""What the benchmarks of several daemons share: starting one, and saving the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def start_daemon(tmp: Path, name: str, *flags: str, config: str = ""
                 ) -> tuple[subprocess.Popen[bytes], Path]:
    """``python -m iii_daemon`` on ``tmp/NAME.sock`` with its own data dir and config
    file (``config``), no HTTP listener, WebSocket off unless ``flags`` say; returns it
    and its socket once it listens."""
    sock = tmp / f"{name}.sock"
    (tmp / f"{name}.toml").write_text(config)
    env = dict(os.environ, PYTHONPATH=str(REPO), III_CONFIG=str(tmp / f"{name}.toml"),
               III_LOG_DIR=str(tmp / "log"))
    daemon = subprocess.Popen([sys.executable, "-m", "iii_daemon", "--socket", str(sock),
                               "--data-dir", str(tmp / name), "--ws-port", "0",
                               "--http-port", "0", "--log-level", "ERROR", *flags],
                              env=env, cwd=REPO)
    deadline = time.monotonic() + 20
    while not sock.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"daemon {name} did not start")
        time.sleep(0.02)
    return daemon, sock


def stop(*daemons: subprocess.Popen[bytes]) -> None:
    for daemon in daemons:
        daemon.terminate()
        daemon.wait(30)


def save(figures: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2))
