"""The benchmarks still run (tiny counts: this checks they work, it measures nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


def test_the_call_benchmark_runs(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--calls",
                           "50", "--voids", "512", "--rounds", "1", "--json", str(report)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(report.read_text())["figures"]
    assert figures["sync_calls_per_s"]["daemon"] > 0 and figures["void_calls_per_s"]["relay"] > 0


def test_the_state_update_benchmark_runs() -> None:
    """It also checks every increment counted (an assertion inside the benchmark)."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "state_update.py"),
                           "--calls", "200"], capture_output=True, text=True, timeout=120,
                          cwd=REPO / "benchmarks")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "state::update, one hot key" in proc.stdout


def test_the_observers_benchmark_runs() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "observers.py"),
                           "--calls", "200", "--observers", "20", "--rounds", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sync calls/s, 1 in flight" in proc.stdout


def test_the_trust_attacks_run(tmp_path: Path) -> None:
    """benchmarks/attacks.py's trust attacks, two cheap ones, against this checkout."""
    from benchmarks.trust_attacks import attack_duplicate_host, attack_oversized_result

    oversized = attack_oversized_result(REPO, tmp_path)
    assert oversized == {"worker connection": "kept",
                         "the oversized call": "result_too_large",
                         "the other call in flight": "fine"}
    (tmp_path / "dup").mkdir()
    duplicate = attack_duplicate_host(REPO, tmp_path / "dup", requests=20)
    assert duplicate["answers to 20 handshakes"] == {400: 20}
    assert duplicate["tracebacks in the log"] == 0


@pytest.mark.parametrize("script, args, figure", [
    # Two daemons on a redis-server of its own: state, triggers and queues across them.
    ("redis_shared.py", ["--calls", "300", "--samples", "20"], "cross_daemon_queue_p99_ms"),
    ("bridge.py", ["--samples", "100"], "bridged_p50_ms"),
    ("rbac.py", ["--calls", "200", "--rounds", "1"], "rbac_listener_calls_per_s"),
    # Clients of the stream socket in a process of their own.
    ("stream_socket.py", ["--clients", "20", "--rounds", "5", "--calls", "200"],
     "fan_out_last_client_p99_ms"),
])
def test_the_several_daemon_benchmarks_run(tmp_path: Path, script: str, args: list[str],
                                           figure: str) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args,
                           "--json", str(report)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(report.read_text())[figure] > 0
