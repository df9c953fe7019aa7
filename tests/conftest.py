from __future__ import annotations

import gc
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, DaemonProcess, RedisServer, daemon_for

# Keep pytest's rewritten test modules between runs and workers even where
# PYTHONDONTWRITEBYTECODE is set: each of the four workers would rewrite every test module.
sys.dont_write_bytecode = False


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection loaded (Textual, the official SDK, hypothesis) lives until the end:
    move it out of the collector's way, so the garbage collections of the run are short;
    and space young collections out as the daemon's own process does
    (iii_daemon.lifecycle.collector), which the in-process daemons of tests do not."""
    from iii_daemon.lifecycle.collector import YOUNG_THRESHOLD

    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background (`pytest &` in a script) inherits SIGINT ignored,
    # and so would every process it starts: the tests that press Ctrl-C on a child need it
    # handled as in a terminal. (Runs in the controller and in each worker.)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line(
        "markers", "daemon_process: the `daemon` fixture is `python -m iii_daemon` in its own "
                   "process (the test is about that process: its pid, log, memory, kill -9)")
    if not hasattr(config, "workerinput"):  # once, in the controller
        _compile_sources()


def _compile_sources() -> None:
    """The suite starts hundreds of Python processes from these sources: compile them once,
    as an ordinary run would, even where PYTHONDONTWRITEBYTECODE is set (it saves each
    process about 70 ms of compiling)."""
    import compileall

    for folder in ("iii_daemon", "iii_sdk", "iii_cli", "tests", "examples", "benchmarks"):
        compileall.compile_dir(REPO / folder, quiet=2, workers=1)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the user's real daemon, socket or directories."""
    monkeypatch.setenv("III_SOCKET", "/nonexistent/iii-tests-must-set-a-socket.sock")
    monkeypatch.setenv("III_DATA_DIR", "/nonexistent/iii-tests-must-set-a-data-dir")
    monkeypatch.setenv("III_CONFIG", "/nonexistent/iii-tests-config.toml")
    monkeypatch.setenv("III_LOG_DIR", "/nonexistent/iii-tests-log")
    monkeypatch.setenv("III_WS_PORT", "0")  # and never the user's real ports
    monkeypatch.setenv("III_HTTP_PORT", "0")
    monkeypatch.delenv("III_URL", raising=False)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir with a short path: Unix socket paths are limited to ~107 bytes."""
    with tempfile.TemporaryDirectory(prefix="iii-", dir="/tmp") as tmp:
        yield Path(tmp)


@pytest.fixture
def redis_server(short_tmp: Path) -> Iterator[RedisServer]:
    """Debian's ``redis-server`` on a free port, for the tests of several daemons."""
    server = RedisServer(short_tmp / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def daemon(short_tmp: Path, request: pytest.FixtureRequest) -> Iterator[DaemonProcess]:
    """The real daemon on a socket in ``short_tmp``: in a thread of the test process unless
    the test is marked ``daemon_process``."""
    proc = daemon_for(request.node, short_tmp)
    yield proc
    if proc.alive:
        proc.stop()
