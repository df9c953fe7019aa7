"""Starting, stopping and securing the daemon."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from iii_sdk.testing import InProcessDaemon
from tests.helpers import (
    REPO,
    DaemonProcess,
    RawClient,
    can_connect,
    child_env,
    free_port,
    wait_for,
)


def test_socket_is_0600_in_a_0700_directory(short_tmp: Path) -> None:
    daemon = DaemonProcess(short_tmp, socket_path=short_tmp / "run" / "iii" / "iii.sock").start()
    try:
        assert stat.S_IMODE(os.stat(daemon.socket_path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(daemon.socket_path.parent).st_mode) == 0o700
    finally:
        daemon.stop()


def test_a_stale_socket_after_kill_9_is_replaced(short_tmp: Path) -> None:
    first = DaemonProcess(short_tmp).start()
    first.kill()
    assert first.socket_path.exists() and not can_connect(first.socket_path)
    second = DaemonProcess(short_tmp).start()
    try:
        RawClient(second.socket_path).ping()
        assert "address already in use" not in second.log().lower()
    finally:
        second.stop()


@pytest.mark.daemon_process
def test_a_second_daemon_on_the_same_socket_is_refused(daemon: DaemonProcess) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "iii_daemon", "--socket", str(daemon.socket_path),
         "--data-dir", str(daemon.data_dir)],
        capture_output=True, text=True, env=child_env(daemon.tmp), cwd=REPO, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"iii daemon: a daemon is already running on "
                                   f"{daemon.socket_path} (pid {daemon.proc.pid})")  # type: ignore[union-attr]
    RawClient(daemon.socket_path).ping()  # the first one was not disturbed


def test_a_non_socket_file_in_the_way_is_not_deleted(short_tmp: Path) -> None:
    path = short_tmp / "iii.sock"
    path.write_text("precious")
    proc = subprocess.run([sys.executable, "-m", "iii_daemon", "--socket", str(path),
                           "--data-dir", str(short_tmp / "d")],
                          capture_output=True, text=True, cwd=REPO, timeout=30)
    assert proc.returncode == 1
    assert "exists and is not a socket" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert path.read_text() == "precious"


def test_a_too_long_socket_path_is_a_clear_error(short_tmp: Path) -> None:
    path = short_tmp / ("x" * 120) / "iii.sock"
    proc = subprocess.run([sys.executable, "-m", "iii_daemon", "--socket", str(path),
                           "--data-dir", str(short_tmp / "d")],
                          capture_output=True, text=True, cwd=REPO, timeout=30)
    assert proc.returncode == 1
    assert "socket path is too long" in proc.stderr and "Traceback" not in proc.stderr


def test_environment_variables_choose_socket_and_data_dir(short_tmp: Path) -> None:
    env = child_env(short_tmp)
    proc = subprocess.Popen([sys.executable, "-m", "iii_daemon", "--ws-port", "0",
                             "--http-port", "0"], env=env, cwd=REPO,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        while "listening on" not in (line := proc.stderr.readline()):
            assert line, "daemon exited"
        assert str(short_tmp / "iii.sock") in line
        assert (short_tmp / "data").is_dir()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_users_process_is_dropped_even_if_the_socket_were_open(
        daemon: DaemonProcess) -> None:
    # Open the file modes wide on purpose: the uid check must still turn the other user away.
    os.chmod(daemon.socket_path.parent, 0o755)
    os.chmod(daemon.socket_path, 0o666)
    code = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX); s.settimeout(5)\n"
        f"s.connect({str(daemon.socket_path)!r})\n"
        "data = s.recv(1000)\n"
        "sys.exit(0 if data == b'' else 1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr  # connection closed with nothing sent
    RawClient(daemon.socket_path).ping()  # our own user still gets in


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_reach_the_socket_through_its_private_directory(
        short_tmp: Path) -> None:
    # The daemon creates the socket's directory; everything above it is open to others
    # and the socket itself is opened wide: only the directory's 0700 can stop them.
    os.chmod(short_tmp, 0o711)
    daemon = DaemonProcess(short_tmp, socket_path=short_tmp / "run" / "iii.sock").start()
    try:
        os.chmod(daemon.socket_path, 0o666)
        code = (
            "import os, socket, sys\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n"
            f"    s.connect({str(daemon.socket_path)!r})\n"
            "except PermissionError:\n"
            "    sys.exit(0)\n"
            "sys.exit(1)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
        assert proc.returncode == 0
    finally:
        daemon.stop()


def test_in_process_daemon_for_application_tests() -> None:
    with InProcessDaemon() as daemon:
        worker = daemon.worker()
        worker.register_function("greet", lambda data: f"hello {data['name']}")
        worker.ping()
        assert daemon.worker().trigger({"function_id": "greet",
                                        "payload": {"name": "ada"}}) == "hello ada"
        path = daemon.socket_path
        assert can_connect(path)
    assert not path.exists()


def test_in_process_daemon_runs_queues_in_memory() -> None:
    from iii_sdk import TriggerAction

    with InProcessDaemon() as daemon:
        got: list[Any] = []
        worker = daemon.worker()
        worker.register_function("job", got.append)
        worker.register_trigger({"type": "queue", "function_id": "job",
                                 "config": {"topic": "t"}}).ready(5)
        receipt = worker.trigger({"function_id": "job", "payload": 1,
                                  "action": TriggerAction.Enqueue(queue="q")})
        assert isinstance(receipt["messageReceiptId"], str)
        worker.trigger({"function_id": "enqueue", "payload": {"topic": "t", "data": 2}})
        wait_for(lambda: sorted(got) == [1, 2], message="both messages")
        assert not (daemon.data_dir / "iii.db").exists()  # nothing on disk


def test_in_process_daemon_raw_clients_too() -> None:
    with InProcessDaemon() as daemon:
        client = RawClient(daemon.socket_path)
        sock = client.sock
        assert sock.family == socket.AF_UNIX
        assert client.call("nope")["error"]["code"] == "function_not_found"


def test_test_daemons_never_bind_default_ports(short_tmp: Path) -> None:
    """child_env sets III_WS_PORT / III_HTTP_PORT to 0, so a daemon started by any test
    (directly, by `iii daemon start` or by `iii demo`) listens on its socket only; a test
    that wants a listener passes --ws-port, which beats the environment."""
    daemon = DaemonProcess(short_tmp).start()
    try:
        listeners = RawClient(daemon.socket_path).call("engine::status")["result"]["listeners"]
        assert listeners["websocket"] == {"state": "off", "port": 0, "reason": "disabled"}
        assert listeners["http"]["port"] == 0
    finally:
        daemon.stop()
    env = dict(child_env(short_tmp), III_WS_PORT="70000")
    proc = subprocess.run([sys.executable, "-m", "iii_daemon"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "III_WS_PORT" in proc.stderr and "65535" in proc.stderr


@pytest.mark.daemon_process
def test_the_log_says_what_happened(daemon: DaemonProcess) -> None:
    from iii_sdk import InitOptions, register_worker
    from tests.helpers import wait_for

    worker = register_worker(str(daemon.socket_path), InitOptions(worker_name="logger"))
    worker.register_function("taken", lambda data: data)

    def broken(data: object) -> None:
        raise RuntimeError("always")

    worker.register_function("broken", broken)
    worker.ping()
    other = RawClient(daemon.socket_path)
    other.send({"type": "registerfunction", "id": "taken"})
    other.call("engine::register_trigger", {"trigger_type": "subscribe", "function_id": "broken",
                                            "config": {"topic": "t"}})
    for _ in range(3):
        other.call("publish", {"topic": "t"})
    wait_for(lambda: "failed: invocation_failed: RuntimeError: always" in daemon.log(),
             message="the trigger failure in the log")
    pid = os.getpid()
    worker.shutdown()
    wait_for(lambda: "worker 'logger'" in daemon.log() and " left " in daemon.log(),
             message="the worker leaving")
    log = daemon.log()
    assert f"worker 'logger' joined over unix (python 0.1.0, pid {pid}" in log
    assert "refused function 'taken' of worker" in log and "already served" in log
    assert log.count("failed: invocation_failed: RuntimeError: always") == 1  # once, not per firing
    assert f"worker 'logger' ({worker.worker_id}) left (pid {pid}, 2 functions)" in log


LOADED_WHEN_READY = """
import asyncio, json, sys
from pathlib import Path
from iii_daemon.lifecycle.serve import DaemonConfig, serve

async def main() -> None:
    stop = asyncio.Event()
    config = DaemonConfig(Path(sys.argv[1]), Path(sys.argv[2]),
                          ws_port=int(sys.argv[3]), http_port=int(sys.argv[4]))
    await serve(config, stop, ready=stop.set)

asyncio.run(main())
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize("listeners", ["off", "on"])
def test_listeners_that_are_off_cost_no_imports(short_tmp: Path, listeners: str) -> None:
    """aiohttp and websockets are a good part of a daemon's start-up: a daemon whose
    listeners are off (as in most tests) never loads them, one with them on does."""
    ports = ["0", "0"] if listeners == "off" else [str(free_port()), str(free_port())]
    proc = subprocess.run(
        [sys.executable, "-c", LOADED_WHEN_READY, str(short_tmp / "iii.sock"),
         str(short_tmp / "data"), *ports],
        capture_output=True, text=True, env=child_env(short_tmp), cwd=REPO, timeout=30)
    assert proc.returncode == 0, proc.stderr[-800:]
    loaded = set(json.loads(proc.stdout.splitlines()[-1]))
    assert ("aiohttp" in loaded, "websockets" in loaded) == (
        (False, False) if listeners == "off" else (True, True))
