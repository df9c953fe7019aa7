from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess


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
def daemon(short_tmp: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(short_tmp).start()
    yield proc
    if proc.alive:
        proc.stop()
