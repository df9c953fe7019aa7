"""Trust (issue 24): nothing acknowledged is lost, one stuck call stalls nothing else,
every input gets one clear line. Each test runs a real daemon, real workers and the
real CLI as processes: the process boundary (signals, exit codes, kill -9, two daemons
on one directory) is what these promises are about."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from iii_sdk import InitOptions, register_worker
from tests.helpers import (
    REPO,
    DaemonProcess,
    RawClient,
    ThreadDaemon,
    ask,
    can_connect,
    child_env,
    free_port,
    run_iii,
    succeeds,
    wait_for,
)

STUCK_WORKER = REPO / "tests" / "workers" / "stuck.py"


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """stderr as the one line the CLI promises (no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip()


def spawn_stuck(tmp: Path, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(STUCK_WORKER), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(tmp), cwd=REPO)
    assert proc.stdout is not None
    if "ready" not in proc.stdout.readline():
        proc.kill()
        stderr = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"the worker did not start: {stderr}")
    return proc


def void_calls(daemon: DaemonProcess, function_id: str, count: int) -> None:
    """``count`` fire-and-forget calls (as ``iii trigger --void`` sends them), at once."""
    client = RawClient(daemon.socket_path)
    for i in range(count):
        client.send({"type": "invokefunction", "function_id": function_id, "data": i,
                     "invocation_id": f"v{i}", "action": {"type": "void"}})
    for _ in range(count):
        assert "error" not in client.recv()
    client.close()


# --- 1. one data dir, one daemon ------------------------------------------------------


@pytest.mark.daemon_process
def test_a_second_daemon_on_the_same_data_dir_is_refused(daemon: DaemonProcess) -> None:
    """Before: both ran on one SQLite file, and one's acknowledged state::set was gone
    after a restart. After: the second is refused, naming the first."""
    assert run_iii(daemon.tmp, "state", "set", "orders", "o1", "1").returncode == 0
    other = daemon.tmp / "other.sock"
    assert daemon.proc is not None
    expected = f"in use by another daemon (pid {daemon.proc.pid} on {daemon.socket_path})"
    direct = subprocess.run([sys.executable, "-m", "iii_daemon", "--socket", str(other),
                             "--data-dir", str(daemon.data_dir)], capture_output=True,
                            text=True, env=child_env(daemon.tmp), timeout=30)
    assert direct.returncode == 1 and expected in one_line(direct)
    assert len(direct.stderr.strip().splitlines()) == 1
    started = run_iii(daemon.tmp, "daemon", "start", "--socket", str(other),
                      "--data-dir", str(daemon.data_dir))
    assert started.returncode == 1 and expected in one_line(started)
    assert not can_connect(other)
    daemon.stop()
    daemon.start()  # what was acknowledged is there
    assert run_iii(daemon.tmp, "state", "get", "orders", "o1").stdout.strip() == "1"


# --- 2. enqueue to a topic nobody consumes yet ------------------------------------------


@pytest.mark.daemon_process
def test_a_message_for_a_topic_with_no_consumer_survives_kill_9(daemon: DaemonProcess
                                                                 ) -> None:
    """Before: `enqueue {topic}` with no queue trigger answered null and dropped it."""
    sent = run_iii(daemon.tmp, "trigger", "enqueue", "topic=signups", 'data={"n": 1}')
    assert sent.returncode == 0 and sent.stdout == ""
    assert "nothing consumes topic signups yet" in one_line(sent)
    [row] = json.loads(run_iii(daemon.tmp, "queue", "list", "-o", "json").stdout)
    assert (row["queue"], row["function_id"], row["waiting_for_function"]) == (
        "signups", None, 1)
    daemon.kill()
    daemon.start()
    worker = register_worker(str(daemon.socket_path), InitOptions(connect_timeout_s=5))
    got: list[Any] = []
    try:
        worker.register_function("welcome", got.append)
        worker.register_trigger({"type": "queue", "function_id": "welcome",
                                 "config": {"topic": "signups"}})
        wait_for(lambda: got, message="the waiting message to be delivered")
        assert got == [{"n": 1}]
        wait_for(lambda: ask(daemon, "engine::queues::list")["queues"][0]["delivered"] == 1)
        quiet = run_iii(daemon.tmp, "trigger", "enqueue", "topic=signups", "data=2")
        assert quiet.returncode == 0 and quiet.stderr == ""  # consumed now: no note
    finally:
        worker.shutdown()


# --- 3. a result larger than the frame limit --------------------------------------------


def test_a_result_over_the_daemons_limit_fails_only_that_call(short_tmp: Path) -> None:
    """Before: the daemon dropped the whole worker connection. After: that call fails
    with result_too_large (exit 1, the limit named); the worker's other calls, in
    flight at the time, are answered."""
    daemon = ThreadDaemon(short_tmp, "--max-frame-bytes", "65536").start()
    worker = spawn_stuck(short_tmp)  # its own limit is the default 64 MiB: it sends
    try:
        slow = subprocess.Popen(  # in flight while the oversized result arrives
            [sys.executable, "-m", "iii_cli", "trigger", "stuck::hang", "--timeout-ms",
             "3000"], env=child_env(short_tmp), text=True, stderr=subprocess.PIPE)
        proc = run_iii(short_tmp, "trigger", "stuck::big", "size=1000000")
        assert proc.returncode == 1
        error = json.loads(proc.stderr)
        assert error["code"] == "result_too_large" and "65536 bytes" in error["message"]
        ok = run_iii(short_tmp, "trigger", "stuck::ok", "n=1")
        assert ok.returncode == 0 and json.loads(ok.stdout) == {"ok": True, "data": {"n": 1}}
        assert slow.wait(20) == 124  # its own timeout, not invocation_stopped (5)
        assert json.loads(run_iii(short_tmp, "list", "workers", "-o", "json").stdout)[0][
            "name"] == "stuck"  # the same worker, still connected
    finally:
        worker.terminate()
        worker.wait(10)
        daemon.stop()


def test_our_sdk_checks_the_size_before_sending(daemon: DaemonProcess) -> None:
    worker = spawn_stuck(daemon.tmp, "64", "100000")
    try:
        proc = run_iii(daemon.tmp, "trigger", "stuck::big", "size=200000")
        error = json.loads(proc.stderr)
        assert proc.returncode == 1 and error["code"] == "result_too_large"
        assert "more than the frame limit of 100000 bytes" in error["message"]
        assert run_iii(daemon.tmp, "trigger", "stuck::ok").returncode == 0
    finally:
        worker.terminate()
        worker.wait(10)


def test_an_oversized_result_from_the_official_sdk_fails_only_that_call(
        short_tmp: Path) -> None:
    from tests.helpers import official_worker

    port = free_port()
    daemon = ThreadDaemon(short_tmp, "--ws-port", str(port), "--max-frame-bytes",
                           "65536").start()
    official = official_worker(port)
    try:
        official.register_function("off::big", lambda data: "y" * 100_000)
        official.register_function("off::ok", lambda data: "fine")
        wait_for(lambda: succeeds(short_tmp / "iii.sock", "off::ok"),
                 message="the official worker's functions")
        proc = run_iii(short_tmp, "trigger", "off::big")
        assert proc.returncode == 1 and json.loads(proc.stderr)["code"] == "result_too_large"
        again = run_iii(short_tmp, "trigger", "off::ok")
        assert again.returncode == 0 and json.loads(again.stdout) == "fine"
    finally:
        official.shutdown()
        daemon.stop()


# --- 4. handler concurrency ----------------------------------------------------------------


def test_stuck_handlers_stall_no_other_function_and_the_limit_is_told(
        daemon: DaemonProcess) -> None:
    """Before: 40 --void calls into a hanging handler froze every other function of the
    worker (6 threads), and callers timed out with 124."""
    worker = spawn_stuck(daemon.tmp, "48")
    try:
        void_calls(daemon, "stuck::hang", 40)
        started = time.monotonic()
        ok = run_iii(daemon.tmp, "trigger", "stuck::ok", "--timeout-ms", "5000")
        assert ok.returncode == 0, one_line(ok)
        took = time.monotonic() - started  # the whole CLI process; the note has figures
        void_calls(daemon, "stuck::hang", 8)  # now at the limit of 48
        rows = json.loads(run_iii(daemon.tmp, "list", "workers", "-o", "json").stdout)
        assert rows[0]["active_invocations"] == 48
        table = run_iii(daemon.tmp, "list", "workers", "-o", "table", env=dict(
            child_env(daemon.tmp), COLUMNS="120")).stdout
        assert "ACTIVE" in table.splitlines()[0]
        busy = run_iii(daemon.tmp, "trigger", "stuck::ok", "--timeout-ms", "5000")
        error = json.loads(busy.stderr)
        assert busy.returncode == 1 and error["code"] == "worker_busy"
        assert "48 calls, its max_concurrency" in error["message"]
        assert took < 5  # not left to time out
        void_calls(daemon, "stuck::ok", 200)  # a burst of refusals: one warning for it
        rows = json.loads(run_iii(daemon.tmp, "list", "workers", "-o", "json").stdout)
        assert rows[0]["active_invocations"] == 48
    finally:
        worker.terminate()
        _, stderr = worker.communicate(timeout=10)
    assert stderr.count("(max_concurrency)") == 1, stderr[-2000:]
    assert "refused 1 call (the last of stuck::ok)" in stderr


# --- 5. worker shutdown --------------------------------------------------------------------


@pytest.mark.parametrize("stop, code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_worker_with_stuck_handlers_stops_at_once_and_answers_its_calls(
        daemon: DaemonProcess, stop: signal.Signals, code: int) -> None:
    worker = spawn_stuck(daemon.tmp)
    caller = subprocess.Popen([sys.executable, "-m", "iii_cli", "trigger", "stuck::hang",
                               "--timeout-ms", "20000"], env=child_env(daemon.tmp),
                              text=True, stderr=subprocess.PIPE)
    void_calls(daemon, "stuck::hang", 3)
    wait_for(lambda: RawClient(daemon.socket_path).in_flight() == 4,
             message="the calls to be running")
    worker.send_signal(stop)
    assert worker.wait(5) == code  # within 5 s, whatever the handlers do
    assert worker.stderr is not None and "Traceback" not in worker.stderr.read()
    assert caller.wait(10) == 5  # lost in transit: retry if idempotent
    assert caller.stderr is not None and "worker_stopping" in caller.stderr.read()


def test_shutdown_returns_at_once_while_a_handler_hangs(daemon: DaemonProcess) -> None:
    worker = register_worker(str(daemon.socket_path), InitOptions(connect_timeout_s=5))
    hang = threading.Event()
    worker.register_function("mine::hang", lambda data: hang.wait())
    worker.ping()
    caller = RawClient(daemon.socket_path, timeout=10)
    caller.send({"type": "invokefunction", "function_id": "mine::hang",
                 "invocation_id": "c1", "data": None})
    wait_for(lambda: RawClient(daemon.socket_path).in_flight() == 1)
    started = time.monotonic()
    worker.shutdown()
    assert time.monotonic() - started < 5
    answer = caller.recv()
    assert answer["invocation_id"] == "c1" and answer["error"]["code"] == "worker_stopping"
    hang.set()


# --- 6. daemon restart brings every SDK back ---------------------------------------------


def test_the_daemon_closes_websocket_peers_with_1012(short_tmp: Path) -> None:
    """Before: 1001 (going away), after which SDKs that reconnect only after an abnormal
    close never came back. A raw client reads the close code."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    port = free_port()
    daemon = ThreadDaemon(short_tmp, "--ws-port", str(port)).start()
    with connect(f"ws://127.0.0.1:{port}") as ws:
        assert json.loads(ws.recv())["type"] == "workerregistered"
        daemon.stop()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012


#: An SDK that reconnects only after an abnormal close (frameworks pin it), installed
#: once per machine into a venv of its own.
OLD_SDK = "iii-sdk==0.11.3"
OLD_SDK_VENV = Path("/tmp/iii-test-cache/venv-iii-sdk-0.11.3")


def old_sdk_python() -> Path:
    python = OLD_SDK_VENV / "bin" / "python"
    if not python.exists():
        OLD_SDK_VENV.parent.mkdir(parents=True, exist_ok=True)
        building = OLD_SDK_VENV.with_name(f"{OLD_SDK_VENV.name}.{os.getpid()}")
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
        subprocess.run([str(building / "bin" / "pip"), "install", "-q", OLD_SDK],
                       check=True, capture_output=True, timeout=300)
        with contextlib.suppress(OSError):  # another test process may have won
            building.rename(OLD_SDK_VENV)
    return python


@pytest.mark.parametrize("sdk", ["0.25", "0.11.3"])
def test_the_official_sdk_comes_back_after_iii_daemon_restart(short_tmp: Path,
                                                              sdk: str) -> None:
    """Before: 0.11.3 came back after kill -9 but never after `iii daemon restart`."""
    python = Path(sys.executable) if sdk == "0.25" else old_sdk_python()
    port = free_port()
    env = dict(child_env(short_tmp), III_WS_PORT=str(port))
    assert run_iii(short_tmp, "daemon", "start", env=env).returncode == 0
    worker = subprocess.Popen([str(python), str(REPO / "tests" / "workers" /
                                                "official_ping.py"), str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_for(lambda: succeeds(short_tmp / "iii.sock", "official::ping"),
                 message="the official worker's function")
        assert run_iii(short_tmp, "daemon", "restart", env=env).returncode == 0
        wait_for(lambda: succeeds(short_tmp / "iii.sock", "official::ping"),
                 timeout=20, message="the official SDK to reconnect and re-register")
    finally:
        worker.kill()
        worker.wait(10)
        run_iii(short_tmp, "daemon", "stop")


# --- 7. parallel starts --------------------------------------------------------------------


def test_four_parallel_starts_all_succeed_with_one_daemon(short_tmp: Path) -> None:
    try:
        starts = [subprocess.Popen([sys.executable, "-m", "iii_cli", "daemon", "start"],
                                   env=child_env(short_tmp), text=True,
                                   stderr=subprocess.PIPE) for _ in range(4)]
        results = [(proc.wait(30), proc.stderr.read() if proc.stderr else "")
                   for proc in starts]
        assert [code for code, _ in results] == [0, 0, 0, 0], results
        pid = int((short_tmp / "iii.sock.pid").read_text())
        assert all(f"pid {pid}" in text for _, text in results), results
        daemons = subprocess.run(["pgrep", "-f", f"iii_daemon --socket {short_tmp}"],
                                 capture_output=True, text=True).stdout.split()
        assert daemons == [str(pid)]
    finally:
        run_iii(short_tmp, "daemon", "stop")


def test_a_socket_path_that_is_a_symlink_is_refused(daemon: DaemonProcess) -> None:
    link = daemon.tmp / "link.sock"
    link.symlink_to(daemon.socket_path)
    proc = run_iii(daemon.tmp, "daemon", "start", "--socket", str(link),
                   "--data-dir", str(daemon.tmp / "data2"))
    assert proc.returncode == 1 and "is a symlink" in one_line(proc)
    assert "started" not in proc.stderr


# --- 8. CLI input --------------------------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["--json", '"\\ud800"'], "--json holds \\ud800, a lone surrogate"),
    (["--json", "[" * 10_000 + "]" * 10_000], "--json is nested more than 900 levels"),
    (["k=\udcff"], "the value of k is not valid UTF-8 (byte 0xff)"),
    (["--json", "NaN"], "--json: NaN is not a JSON number"),
    (["n=Infinity"], "the value of n: Infinity is not a JSON number"),
    (["n=1e999"], "the value of n: 1e999 is too large for a JSON number"),
    (["--json", '{"a": -Infinity}'], "--json: -Infinity is not a JSON number"),
])
def test_what_the_wire_cannot_carry_is_one_line_and_exit_2(short_tmp: Path, args: list[str],
                                                          says: str) -> None:
    """Before: tracebacks with exit 1, or the daemon's complaint about byte 59."""
    proc = subprocess.run([sys.executable, "-m", "iii_cli", "trigger", "f", *args],
                          capture_output=True, text=True, env=child_env(short_tmp),
                          timeout=30)
    assert proc.returncode == 2
    problem, usage = one_line(proc).splitlines()
    assert says in problem and usage.startswith("usage: iii trigger")


def test_json_null_is_sent_as_null(daemon: DaemonProcess) -> None:
    worker = spawn_stuck(daemon.tmp)
    try:
        proc = run_iii(daemon.tmp, "trigger", "stuck::ok", "--json", "null")
        assert proc.returncode == 0 and json.loads(proc.stdout) == {"ok": True, "data": None}
        nested = "[" * 900 + "]" * 900  # the deepest the CLI takes, the daemon takes too
        assert run_iii(daemon.tmp, "trigger", "stuck::ok", "--json", nested).returncode == 0
    finally:
        worker.terminate()
        worker.wait(10)


# --- 9. config -----------------------------------------------------------------------------


def test_config_values_are_checked_where_set_and_where_read(short_tmp: Path) -> None:
    """Before: `iii config set websocket.port 99999` was kept, and the daemon then
    bound some other port."""
    proc = run_iii(short_tmp, "config", "set", "websocket.port", "99999")
    assert proc.returncode == 2 and "must be from 0 to 65535, got 99999" in one_line(proc)
    assert not (short_tmp / "config.toml").exists()
    (short_tmp / "config.toml").write_text("[websocket]\nport = 99999\n")
    env = child_env(short_tmp)
    del env["III_WS_PORT"]  # the file's value is the one read
    proc = subprocess.run([sys.executable, "-m", "iii_daemon", "--socket",
                           str(short_tmp / "iii.sock"), "--data-dir", str(short_tmp / "d")],
                          capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "'websocket.port' must be from 0 to 65535, got 99999" in one_line(proc)
    started = run_iii(short_tmp, "daemon", "start", env=env)
    assert started.returncode == 1 and "must be from 0 to 65535" in one_line(started)
    (short_tmp / "config.toml").write_text("[websocket]\nport = 5000\n")
    env["III_WS_PORT"] = "70000"  # the environment is held to the same rule
    proc = subprocess.run([sys.executable, "-m", "iii_daemon", "--socket",
                           str(short_tmp / "iii.sock")], capture_output=True, text=True,
                          env=env, timeout=30)
    assert proc.returncode == 1 and "$III_WS_PORT: 'websocket.port' must be from 0 to " \
        "65535, got 70000" in one_line(proc)
    env["III_WS_PORT"] = "6000"
    shown = run_iii(short_tmp, "config", "show", env=env).stdout
    assert "port = 6000  # from $III_WS_PORT, not the file" in shown.splitlines()


# --- 10. listeners -------------------------------------------------------------------------


def raw_request(port: int, head: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.daemon_process
def test_a_handshake_with_two_host_headers_gets_400_and_few_log_lines(
        short_tmp: Path) -> None:
    """Before: a 500 and a traceback in the log for each such request."""
    port = free_port()
    daemon = DaemonProcess(short_tmp, "--ws-port", str(port)).start()
    try:
        head = ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n")
        for _ in range(500):
            status, _ = raw_request(port, head)
            assert status == 400
        log = daemon.log()
        assert "Traceback" not in log and " 500 " not in log
        assert sum("Host header is given 2 times" in line for line in log.splitlines()) <= 2
    finally:
        daemon.stop()


# --- 11. ids that impersonate ---------------------------------------------------------------


@pytest.mark.parametrize("bad, why", [
    (" math::add", "starts or ends with whitespace"),
    ("math::add\u00a0", "starts or ends with whitespace"),
    ("math::\u200badd", "invisible format character U+200B"),
    ("math::add\u2060", "invisible format character U+2060"),
    ("f" * 513, "ids are at most 512"),
])
def test_ids_that_could_pass_for_others_are_refused(daemon: DaemonProcess, bad: str,
                                                   why: str) -> None:
    worker = register_worker(str(daemon.socket_path), InitOptions(connect_timeout_s=5))
    try:
        handle = worker.register_function(bad, lambda data: None)
        with pytest.raises(Exception, match=re.escape(why)):
            handle.ready(5)
        trigger = worker.register_trigger({"type": "cron", "function_id": "f",
                                           "config": {"expression": "0 0 * * * *"}})
        trigger.ready(5)
        proc = run_iii(daemon.tmp, "register-trigger", "--type", "cron", "--function", "f",
                       "--id", bad, "--config", '{"expression": "0 0 * * * *"}')
        assert proc.returncode == 2 and why in one_line(proc)
        enqueued = run_iii(daemon.tmp, "trigger", "f", "--enqueue", bad)
        assert enqueued.returncode == 2 and why in one_line(enqueued)
    finally:
        worker.shutdown()


def test_iii_list_never_shows_two_ids_alike(daemon: DaemonProcess) -> None:
    worker = register_worker(str(daemon.socket_path), InitOptions(connect_timeout_s=5))
    try:
        for function_id in ("my::pay", "my::p\u0430y", "my::p\\u0430y",
                            "my::" + "x" * 200 + "1", "my::" + "x" * 200 + "2"):
            worker.register_function(function_id, lambda data: None).ready(5)
        shown = run_iii(daemon.tmp, "list", "functions", "-o", "table",
                        env=dict(child_env(daemon.tmp), COLUMNS="80")).stdout
        cells = [line.split("  ")[0].strip() for line in shown.splitlines()[1:]]
        cells = [cell for cell in cells if cell.startswith("my::")]  # not the daemon's
        assert len(cells) == len(set(cells)) == 5
        assert "my::p\\u0430y" in cells and "my::p\\\\u0430y" in cells
        assert all("…" not in cell for cell in cells)  # ids are never cut short
    finally:
        worker.shutdown()


# --- 12. exit codes for CI ----------------------------------------------------------------


def test_a_call_whose_worker_dies_exits_5(daemon: DaemonProcess) -> None:
    worker = spawn_stuck(daemon.tmp)
    caller = subprocess.Popen([sys.executable, "-m", "iii_cli", "trigger", "stuck::hang"],
                              env=child_env(daemon.tmp), text=True, stderr=subprocess.PIPE)
    wait_for(lambda: RawClient(daemon.socket_path).in_flight() == 1)
    worker.kill()
    assert caller.wait(10) == 5
    assert caller.stderr is not None and "invocation_stopped" in caller.stderr.read()


def test_a_call_the_daemon_drops_while_stopping_exits_5(daemon: DaemonProcess) -> None:
    worker = spawn_stuck(daemon.tmp)
    try:
        caller = subprocess.Popen([sys.executable, "-m", "iii_cli", "trigger",
                                   "stuck::hang"], env=child_env(daemon.tmp), text=True,
                                  stderr=subprocess.PIPE)
        wait_for(lambda: RawClient(daemon.socket_path).in_flight() == 1)
        daemon.stop()
        assert caller.wait(10) == 5
        help_text = run_iii(daemon.tmp, "trigger", "--help").stdout
        assert "5 the call was lost in transit" in " ".join(help_text.split())
    finally:
        worker.kill()
        worker.wait(10)


def test_a_socket_that_never_answers_is_exit_3_for_every_command(short_tmp: Path) -> None:
    """Before: 124 for some commands (after a void call's 35 s), and `iii watch` hung."""
    from benchmarks.attack_kit import mute_socket

    commands = [["trigger", "f", "--timeout-ms", "200"], ["trigger", "f", "--void"],
                ["list", "functions"], ["daemon", "status"], ["watch"],
                ["state", "get", "s", "k"]]
    with mute_socket(short_tmp / "mute.sock") as path:
        env = dict(child_env(short_tmp), III_SOCKET=str(path))
        running = [subprocess.Popen([sys.executable, "-m", "iii_cli", *args], env=env,
                                    text=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE) for args in commands]
        for args, proc in zip(commands, running, strict=True):
            code = proc.wait(30)
            stderr = proc.stderr.read() if proc.stderr else ""
            assert code == 3, (args, code, stderr)
            assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


# --- 13. iii demo escapes what the daemon sends --------------------------------------------


def test_iii_demo_escapes_control_characters_in_worker_names(daemon: DaemonProcess) -> None:
    evil = register_worker(str(daemon.socket_path), InitOptions(
        connect_timeout_s=5, worker_name="evil\x1b[2J\x07name"))
    try:
        evil.ping()
        wait_for(lambda: any("evil" in str(w.get("name")) for w in RawClient(
            daemon.socket_path).call("engine::workers::list")["result"]["workers"]))
        proc = run_iii(daemon.tmp, "demo", timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
        assert "evil\\x1b[2J\\x07name" in proc.stdout
    finally:
        evil.shutdown()
