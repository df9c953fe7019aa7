from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from iii_sdk import III, InitOptions, register_worker
from tests.helpers import DaemonProcess, spawn_worker


@pytest.fixture
def math_worker(daemon: DaemonProcess) -> Iterator[Any]:
    proc = spawn_worker(daemon.tmp)
    yield proc
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def sdk_worker(daemon: DaemonProcess) -> Iterator[III]:
    worker = register_worker(str(daemon.socket_path), InitOptions(connect_timeout_s=5))
    yield worker
    worker.shutdown()
