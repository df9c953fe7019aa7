from __future__ import annotations

from pathlib import Path

from tests.helpers import DaemonProcess, RawClient, can_connect, run_iii, spawn_worker


def test_demo_starts_a_daemon_shows_calls_and_stops_it(short_tmp: Path) -> None:
    proc = run_iii(short_tmp, "demo", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"daemon: started on {short_tmp / 'iii.sock'}" in out
    assert '{"sum": 5}' in out  # JSON, not a Python repr
    assert "division_by_zero: cannot divide by zero" in out
    assert "TIMEOUT" in out and "function_not_found" in out
    assert "via iii-demo" in out and ", delivered in" in out
    assert "skipped 1 (condition math::is_positive)" in out and "ran 2 times" in out
    assert "daemon: stopped" in out
    assert not can_connect(short_tmp / "iii.sock")


def test_demo_uses_a_running_daemon_and_leaves_it_running(daemon: DaemonProcess) -> None:
    proc = run_iii(daemon.tmp, "demo", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "already running" in proc.stdout
    client = RawClient(daemon.socket_path)
    client.ping()
    # Nothing left behind in the user's state (it used its own scope and cleaned up).
    assert client.call("state::list", {"scope": "iii-demo"})["result"] == []


def test_demo_uses_a_math_worker_that_is_already_attached(daemon: DaemonProcess) -> None:
    worker = spawn_worker(daemon.tmp)
    try:
        proc = run_iii(daemon.tmp, "demo", timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "the math worker is already attached; the demo uses it" in proc.stdout
        assert "FUNCTION_NAMESPACE_CONFLICT" not in proc.stdout + proc.stderr
        assert '{"sum": 5}' in proc.stdout
    finally:
        worker.terminate()
        worker.wait(10)


def test_the_demo_worker_ships_inside_the_package() -> None:
    """`iii demo` must work after a plain (non-editable) install: its worker is a module
    of a package that pyproject's package list includes, run with `python -m`."""
    import tomllib

    from setuptools import find_packages

    from iii_cli import demo
    from tests.helpers import REPO

    pattern = tomllib.loads((REPO / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    packaged = set(find_packages(str(REPO), include=pattern))
    assert demo.WORKER_MODULE.rpartition(".")[0] in packaged
    assert (REPO / "examples" / "math_worker.py").resolve() == \
        (REPO / "iii_cli" / "examples" / "math_worker.py")
