from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, DaemonProcess, RawClient, can_connect, child_env


def test_demo_starts_a_daemon_shows_calls_and_stops_it(short_tmp: Path) -> None:
    socket_path = short_tmp / "iii.sock"
    proc = subprocess.run([sys.executable, "-m", "iii_cli.demo", "--socket", str(socket_path)],
                          capture_output=True, text=True, cwd=REPO, env=child_env(short_tmp),
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "daemon: started on" in out
    assert "{'sum': 5}" in out
    assert "division_by_zero: cannot divide by zero" in out
    assert "TIMEOUT" in out and "function_not_found" in out
    assert "daemon: stopped" in out
    assert not can_connect(socket_path)


def test_demo_uses_a_running_daemon_and_leaves_it_running(daemon: DaemonProcess) -> None:
    proc = subprocess.run([sys.executable, "-m", "iii_cli.demo",
                           "--socket", str(daemon.socket_path)],
                          capture_output=True, text=True, cwd=REPO, env=child_env(daemon.tmp),
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "already running" in proc.stdout
    RawClient(daemon.socket_path).ping()
