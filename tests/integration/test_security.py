"""Hostile input against a real daemon: each attack of the security issue, reproduced.

Every test here failed before its fix (benchmarks/attacks.py prints the figures before
and after). Another user is played by a child process that drops to uid 65534 after
loading Python (the interpreter lives under /root, which ``nobody`` cannot read).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    IIIBIN,
    REPO,
    DaemonProcess,
    RawClient,
    child_env,
    free_port,
    handshake,
    run_iii,
    wait_for,
)

ROOT = os.geteuid() == 0
NOBODY = 65534


def ws_daemon(tmp: Path, config: str = "", *extra: str) -> tuple[DaemonProcess, int]:
    if config:
        (tmp / "config.toml").write_text(config)
    port = free_port()
    return DaemonProcess(tmp, "--ws-port", str(port), *extra).start(), port


@pytest.fixture
def ws(short_tmp: Path) -> Iterator[tuple[DaemonProcess, int]]:
    daemon, port = ws_daemon(short_tmp)
    yield daemon, port
    daemon.stop()


def as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as uid 65534; the stdlib modules it needs are imported first."""
    prelude = ("import encodings.idna, os, socket, sys\n"
               f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})\n")
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True,
                          text=True, timeout=30)


# --- 1. the WebSocket door ------------------------------------------------------------------


def test_a_browser_origin_is_refused_unless_configured(ws: tuple[DaemonProcess, int]) -> None:
    daemon, port = ws
    assert handshake(port, {"Origin": "https://evil.example"}) == 403
    assert handshake(port, {"Origin": "null"}) == 403
    assert handshake(port) == 101  # the SDKs send no Origin
    # Five refusals, one log line (no flood from a page retrying in a loop).
    for _ in range(4):
        handshake(port, {"Origin": "https://evil.example"})
    assert daemon.log().count("refused 127.0.0.1") == 1
    assert "origin 'https://evil.example' is not allowed" in daemon.log()


def test_an_allowed_origin_gets_in(short_tmp: Path) -> None:
    daemon, port = ws_daemon(short_tmp, '[websocket]\n'
                                        'allowed_origins = ["https://dash.example"]\n')
    try:
        assert handshake(port, {"Origin": "https://dash.example"}) == 101
        assert handshake(port, {"Origin": "https://evil.example"}) == 403
    finally:
        daemon.stop()


def test_a_rebinding_host_is_refused(ws: tuple[DaemonProcess, int]) -> None:
    _, port = ws
    assert handshake(port, host=f"evil.example:{port}") == 403
    assert handshake(port, host="evil.example") == 403
    for good in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert handshake(port, host=good) == 101


def test_allowed_hosts_widen_the_host_check(short_tmp: Path) -> None:
    daemon, port = ws_daemon(short_tmp, '[websocket]\nallowed_hosts = ["iii.lan"]\n')
    try:
        assert handshake(port, host=f"iii.lan:{port}") == 101
        assert handshake(port, host=f"evil.example:{port}") == 403
    finally:
        daemon.stop()


HANDSHAKE_AS_NOBODY = """
s = socket.create_connection(("127.0.0.1", {port}), timeout=5)
s.sendall(b"GET / HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nUpgrade: websocket\\r\\n"
          b"Connection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n"
          b"Sec-WebSocket-Version: 13\\r\\n{extra}\\r\\n")
print(s.recv(4096).split(b"\\r\\n", 1)[0].split()[1].decode())
"""


@pytest.mark.skipif(not ROOT, reason="needs root to act as another user")
def test_another_user_over_loopback_is_refused(ws: tuple[DaemonProcess, int]) -> None:
    daemon, port = ws
    proc = as_nobody(HANDSHAKE_AS_NOBODY.format(port=port, extra=""))
    assert proc.stdout.strip() == "403", proc.stderr
    assert "connections from other users are refused (uid 65534)" in daemon.log()
    assert handshake(port) == 101  # our own user still gets in


@pytest.mark.skipif(not ROOT, reason="needs root to act as another user")
def test_a_token_lets_another_user_in_and_nobody_without_it(short_tmp: Path) -> None:
    daemon, port = ws_daemon(short_tmp, '[websocket]\ntoken = "s3cret"\n')
    try:
        bearer = "Authorization: Bearer s3cret\\r\\n"
        assert as_nobody(HANDSHAKE_AS_NOBODY.format(port=port, extra=bearer)
                         ).stdout.strip() == "101"
        assert as_nobody(HANDSHAKE_AS_NOBODY.format(port=port, extra="")
                         ).stdout.strip() == "401"
        # The token never opens the door to a browser page.
        assert handshake(port, {"Authorization": "Bearer s3cret",
                                "Origin": "https://evil.example"}) == 403
    finally:
        daemon.stop()


# --- 2. nothing stored can brick the daemon ---------------------------------------------------


def test_an_unschedulable_cron_is_refused_and_a_worker_keeps_its_connection(
        daemon: DaemonProcess) -> None:
    client = RawClient(daemon.socket_path)
    answer = client.call("engine::register_trigger", {
        "trigger_type": "cron", "function_id": "f", "config": {"expression": "0 0 0 30 2 *"}})
    assert answer["error"]["code"] == "bad_request"
    assert "'0 0 0 30 2 *' never fires" in answer["error"]["message"]
    assert client.call("engine::registered-triggers::list")["result"]["registered_triggers"] == []
    client.send({"type": "registertrigger", "id": "w", "trigger_type": "cron",
                 "function_id": "f", "config": {"expression": "0 0 31 4 *"}})
    verdict = client.recv()
    assert verdict["type"] == "triggerregistrationresult"
    assert verdict["error"]["code"] == "trigger_registration_failed"
    client.ping()  # still connected
    daemon.stop()
    daemon.start()  # and the daemon starts again
    RawClient(daemon.socket_path).ping()


def test_stored_rows_that_cannot_load_are_listed_and_never_stop_the_daemon(
        short_tmp: Path) -> None:
    daemon = DaemonProcess(short_tmp).start()
    client = RawClient(daemon.socket_path)
    assert "error" not in client.call("engine::register_trigger", {
        "id": "good", "trigger_type": "subscribe", "function_id": "f",
        "config": {"topic": "t"}})
    client.close()
    daemon.stop()
    with sqlite3.connect(daemon.data_dir / "iii.db") as db:
        db.executemany("INSERT INTO triggers VALUES (?, ?, ?, ?, ?)", [
            ("never", "cron", "f", '{"expression": "0 0 0 30 2 *"}', None),
            ("garbled", "cron", "f", "{not json", None),
            ("listy", "state", "f", "[1, 2]", None),
            ("noscope", "state", "f", "{}", "{bad"),
            ("esc\x1b[2J", "subscribe", "f", '{"topic": "t"}', None),
        ])
    daemon.start()
    client = RawClient(daemon.socket_path)
    rows = {t["id"]: t for t in
            client.call("engine::registered-triggers::list")["result"]["registered_triggers"]}
    assert rows["good"]["status"] == "active"
    for bad, reason in [("never", "never fires"), ("garbled", "not valid JSON"),
                        ("listy", "config must be an object"),
                        ("noscope", "not valid JSON"), ("esc\x1b[2J", "control character")]:
        assert rows[bad]["status"] == "error", bad
        assert reason in rows[bad]["error"], rows[bad]
    # Each can still be removed, and everything else works.
    assert client.call("engine::unregister_trigger", {"id": "never"})["result"] == {
        "removed": True}
    assert client.call("publish", {"topic": "t", "data": 1})["result"] == {"subscribers": 1}
    daemon.stop()


# --- 3. output amplification ------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_pipelined_list_calls_cannot_amplify_output(short_tmp: Path) -> None:
    from websockets.sync.client import connect

    daemon, port = ws_daemon(short_tmp, "", "--log-level", "WARNING")
    assert daemon.proc is not None
    try:
        owner = RawClient(daemon.socket_path)
        for start in range(0, 20_000, 2_000):
            owner.send_raw(b"".join(
                b'{"type":"registerfunction","id":"fn::%06d"}\n' % i
                for i in range(start, start + 2_000)))
        owner.ping()
        call = (b'{"type":"invokefunction","function_id":"engine::functions::list",'
                b'"invocation_id":"x"}\n')
        burst = call * 2_880  # 256 KiB of calls, each answered with ~2.5 MB
        peak = [0.0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_mib(daemon.proc.pid))  # type: ignore[union-attr]
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        other = RawClient(daemon.socket_path, timeout=30)
        worst = 0.0
        try:
            attackers = [RawClient(daemon.socket_path) for _ in range(2)]
            for attacker in attackers:
                attacker.send_raw(burst)  # one write, then never read
            # An attacker that never reads, so no keepalive (whose timeout would
            # be logged from the client's thread long after this test).
            wsa = connect(f"ws://127.0.0.1:{port}", max_size=None, ping_interval=None,
                          close_timeout=1).__enter__()
            wsa.recv()
            for _ in range(2_880):
                wsa.send(call.decode())
                until = time.monotonic() + 2
            while time.monotonic() < until:
                started = time.monotonic()
                other.ping()
                worst = max(worst, time.monotonic() - started)
                time.sleep(0.05)
        finally:
            done.set()
            sampler.join()
        assert peak[0] <= 400, f"daemon RSS reached {peak[0]:.0f} MiB"
        assert worst <= 1.0, f"another client waited {worst:.2f} s"
        # The attacker is paused, not lost: reading gets it answers again.
        answer = attackers[0].recv()
        assert answer["type"] == "invocationresult" and len(answer["result"]["functions"]) > 20_000
        wsa.close()
    finally:
        daemon.stop()


def closed_by_daemon(sock: socket.socket) -> bool:
    """Read until the daemon closes the connection (True) or goes quiet (False). The
    cut-off happens while the last hog sends, so a closed one is closed by now."""
    sock.settimeout(0.5)
    try:
        while sock.recv(1 << 16):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


PARKED = ("--max-frame-bytes", str(8 << 20), "--max-parked-bytes", str(20 << 20))


def test_unfinished_frames_are_capped_across_connections(short_tmp: Path) -> None:
    # 8 MiB frames allowed; three connections each park 7 MiB of one unfinished line.
    # Past the daemon-wide cap (20 MiB here) the largest holder is cut off.
    daemon = DaemonProcess(short_tmp, *PARKED).start()
    try:
        hogs = [socket.socket(socket.AF_UNIX) for _ in range(3)]
        chunk = b"x" * (1 << 20)
        for hog in hogs:
            hog.connect(os.fspath(daemon.socket_path))
            hog.settimeout(10)
            try:
                hog.sendall(b'{"type":"ping","pad":"')
                for _ in range(7):
                    hog.sendall(chunk)
            except OSError:
                pass  # this one was cut off while sending
        assert sum(closed_by_daemon(hog) for hog in hogs) == 1
        assert "bytes of unfinished frames" in daemon.log()
        RawClient(daemon.socket_path).ping()
        for hog in hogs:
            hog.close()
    finally:
        daemon.stop()


def ws_frame(payload: bytes, opcode: int, fin: bool) -> bytes:
    """A client frame (masked with a zero key, so the payload is sent as it is)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + len(payload).to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def test_unfinished_websocket_messages_count_against_the_same_cap(short_tmp: Path) -> None:
    daemon, port = ws_daemon(short_tmp, "", *PARKED)
    try:
        hogs = []
        for _ in range(3):
            hog = socket.create_connection(("127.0.0.1", port), timeout=10)
            hog.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            assert b" 101 " in hog.recv(4096)
            hogs.append(hog)
            piece = b"x" * (1 << 20)
            try:
                hog.sendall(ws_frame(b'{"type":"ping","pad":"', 1, fin=False))
                for _ in range(7):  # a message that never ends: 7 MiB of fragments
                    hog.sendall(ws_frame(piece, 0, fin=False))
            except OSError:
                pass
        assert sum(closed_by_daemon(hog) for hog in hogs) == 1
        assert "bytes of unfinished frames" in daemon.log()
        assert handshake(port) == 101
        for hog in hogs:
            hog.close()
    finally:
        daemon.stop()


# --- 4. one bad message hurts nobody else -----------------------------------------------------


def test_invalid_utf8_and_deep_nesting_stay_with_their_message(
        ws: tuple[DaemonProcess, int]) -> None:
    from websockets.sync.client import connect

    daemon, port = ws
    worker = connect(f"ws://127.0.0.1:{port}").__enter__()
    worker.recv()
    worker.send(json.dumps({"type": "registerfunction", "id": "ws::f"}))
    caller = RawClient(daemon.socket_path)
    caller.ping()
    caller.send_raw(b'{"type":"invokefunction","function_id":"ws::f","invocation_id":"u",'
                    b'"data":"\xff\xfe"}\n')
    answer = caller.recv()
    assert answer["invocation_id"] == "u" and answer["error"]["code"] == "bad_frame"
    assert "UTF-8" in answer["error"]["message"]
    caller.send_raw(b'{"type":"invokefunction","function_id":"x","invocation_id":"d",'
                    b'"data":' + b"[" * 1000 + b"]" * 1000 + b"}\n")
    answer = caller.recv()
    assert answer["invocation_id"] == "d" and "nested too deeply" in answer["error"]["message"]
    caller.send_raw(b'{"type":"registerfunction","id":"bad\xc3"}\n')
    assert caller.recv()["code"] == "bad_frame"
    caller.ping()  # the caller is still connected, and so is the worker:
    listed = caller.call("engine::functions::list")["result"]["functions"]
    assert "ws::f" in {f["function_id"] for f in listed}
    worker.close()


# --- 5. no unbounded waits --------------------------------------------------------------------


def test_calls_to_a_silent_worker_are_forgotten_at_their_deadline(short_tmp: Path) -> None:
    (short_tmp / "config.toml").write_text("call_timeout_ms = 1000\n")
    daemon = DaemonProcess(short_tmp).start()
    try:
        silent = RawClient(daemon.socket_path)
        silent.send({"type": "registerfunction", "id": "silent"})
        silent.ping()
        caller = RawClient(daemon.socket_path)
        caller.send_raw(b'{"type":"invokefunction","function_id":"silent",'
                        b'"action":{"type":"void"}}\n' * 2_000)
        assert caller.in_flight() == 2_000
        wait_for(lambda: caller.in_flight() == 0, timeout=10,
                 message="void calls to expire at the 1 s default deadline")
    finally:
        daemon.stop()


def test_a_cron_into_a_silent_worker_skips_while_the_last_firing_runs(
        daemon: DaemonProcess) -> None:
    silent = RawClient(daemon.socket_path)
    silent.send({"type": "registerfunction", "id": "silent"})
    silent.ping()
    client = RawClient(daemon.socket_path)
    client.call("engine::register_trigger", {"id": "tick", "trigger_type": "cron",
                                             "function_id": "silent",
                                             "config": {"expression": "* * * * * *"}})

    def skipped() -> list[dict[str, Any]]:
        events = client.call("engine::events::list", {"event": "trigger.skipped"})
        return [e for e in events["result"]["events"] if e["reason"] == "still_running"]

    wait_for(lambda: len(skipped()) >= 2, timeout=10, message="still_running skips")
    assert client.in_flight() == 1  # one firing waits; the others never piled up


# --- 6. files and names -----------------------------------------------------------------------


def test_the_store_and_pidfile_are_private(daemon: DaemonProcess) -> None:
    RawClient(daemon.socket_path).call("state::set", {"scope": "s", "key": "k", "value": 1})
    for path in (daemon.data_dir / "iii.db", daemon.data_dir / "iii.db-wal",
                 daemon.socket_path.with_name("iii.sock.pid")):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_a_pidfile_symlink_is_not_followed(short_tmp: Path) -> None:
    target = short_tmp / "victim"
    target.write_text("precious\n")
    (short_tmp / "iii.sock.pid").symlink_to(target)
    daemon = DaemonProcess(short_tmp)
    daemon.start(wait=False)
    assert daemon.proc is not None and daemon.proc.wait(10) == 1
    assert "it is a symlink" in daemon.log() and "Traceback" not in daemon.log()
    assert target.read_text() == "precious\n"


def test_a_socket_directory_others_can_write_is_refused(short_tmp: Path) -> None:
    shared = short_tmp / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    daemon = DaemonProcess(short_tmp, socket_path=shared / "iii.sock")
    daemon.start(wait=False)
    assert daemon.proc is not None and daemon.proc.wait(10) == 1
    [line] = [ln for ln in daemon.log().splitlines() if ln]
    assert "writable by other users" in line and str(shared) in line
    assert not (shared / "iii.sock").exists()


@pytest.mark.skipif(not ROOT, reason="needs root to hand a directory to another user")
def test_a_socket_directory_of_another_user_is_refused(short_tmp: Path) -> None:
    theirs = short_tmp / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    daemon = DaemonProcess(short_tmp, socket_path=theirs / "iii.sock")
    daemon.start(wait=False)
    assert daemon.proc is not None and daemon.proc.wait(10) == 1
    assert f"belongs to uid {NOBODY}" in daemon.log()


def test_control_characters_never_reach_the_terminal(daemon: DaemonProcess) -> None:
    client = RawClient(daemon.socket_path)
    client.send({"type": "registerfunction", "id": "evil\x1b]52;c;SGVsbG8=\x07"})
    refused = client.recv()
    assert refused["type"] == "error" and "control character U+001B" in refused["message"]
    assert refused["request_id"].startswith("evil")
    # Descriptions are free text: kept, but escaped on the way to a terminal.
    client.send({"type": "registerfunction", "id": "ok",
                 "description": "clear\x1b[2J\x9b31m screen\u202e"})
    client.ping()
    table = run_iii(daemon.tmp, "list", "functions", "-o", "table")
    assert table.returncode == 0 and "ok" in table.stdout
    assert not any(c in table.stdout for c in "\x1b\x9b\u202e")
    assert "\\x1b[2J" in table.stdout
    refused_trigger = client.call("engine::register_trigger", {
        "id": "t\x07", "trigger_type": "subscribe", "function_id": "ok",
        "config": {"topic": "t"}})
    assert refused_trigger["error"]["code"] == "bad_request"


# --- 7. the CLI against a daemon that misbehaves ----------------------------------------------


@pytest.fixture
def fake_daemon(short_tmp: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A socket that accepts and then sends whatever the test puts in ``script``: bytes
    to send, one item every 0.2 s, repeating the last (b"" sends nothing)."""
    path = short_tmp / "fake.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.fspath(path))
    server.listen(8)
    server.settimeout(0.1)
    script: list[bytes] = [b""]
    stop = threading.Event()

    def serve() -> None:
        conns: list[tuple[socket.socket, int]] = []
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conns.append((server.accept()[0], 0))
            for i, (conn, step) in enumerate(conns):
                with contextlib.suppress(OSError):
                    conn.sendall(script[min(step, len(script) - 1)])
                conns[i] = (conn, step + 1)
            time.sleep(0.1)
        for conn, _ in conns:
            conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    yield path, script
    stop.set()
    thread.join()
    server.close()


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_trickling_daemon_cannot_hold_the_cli(short_tmp: Path,
                                                fake_daemon: tuple[Path, list[bytes]]) -> None:
    path, script = fake_daemon
    script[:] = [b" "]  # a byte every 0.1 s, never a whole line
    commands = {"list": ["list", "functions"],
                "trigger": ["trigger", "f", "--timeout-ms", "300"],
                "status": ["daemon", "status"]}
    env = dict(child_env(short_tmp), III_SOCKET=str(path))
    running = {name: subprocess.Popen([IIIBIN, *args], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name, args in commands.items()}  # side by side: each waits ~5 s
    done = {name: subprocess.CompletedProcess(proc.args, proc.wait(20), *proc.communicate())
            for name, proc in running.items()}
    # Not even a greeting by the command's deadline: no daemon that works (3), for
    # every command, in one wording; not a timeout of the call (124).
    for name, proc in done.items():
        assert proc.returncode == 3, name
        assert "accepted the connection but never answered like an iii daemon" \
            in one_line(proc), name


def test_a_daemon_sending_garbage_gets_one_line(short_tmp: Path,
                                                fake_daemon: tuple[Path, list[bytes]]) -> None:
    path, script = fake_daemon
    script[:] = [b"not json at all\n", b""]
    for args in (["trigger", "f"], ["list", "functions"], ["daemon", "status"]):
        proc = run_iii(short_tmp, *args, "--socket", str(path), timeout=20)
        assert proc.returncode == 3 and "malformed frame" in one_line(proc), args


def test_completion_gives_up_within_its_budget(short_tmp: Path,
                                               fake_daemon: tuple[Path, list[bytes]]) -> None:
    path, script = fake_daemon
    script[:] = [b" "]
    env = dict(os.environ, _III_COMPLETE="complete_bash", COMP_WORDS="iii trigger ",
               COMP_CWORD="2", III_SOCKET=str(path))
    started = time.monotonic()
    proc = subprocess.run([IIIBIN], env=env, capture_output=True, text=True, timeout=20)
    took = time.monotonic() - started
    assert proc.returncode == 0 and proc.stdout.strip() == "" and "Traceback" not in proc.stderr
    assert took < 5  # a hung completion would wait for the socket's default timeout


def test_payload_limits(daemon: DaemonProcess, short_tmp: Path) -> None:
    (short_tmp / "small").mkdir(mode=0o700)
    small = DaemonProcess(short_tmp / "small", "--max-frame-bytes", str(1 << 20)).start()
    try:
        big = short_tmp / "big.json"
        big.write_text(json.dumps({"pad": "x" * (2 << 20)}))
        proc = run_iii(small.tmp, "trigger", "nothing", "--json", f"@{big}")
        assert proc.returncode == 2  # answered as that call's error, the rest unharmed
        assert "larger than the limit of 1048576 bytes" in one_line(proc)
    finally:
        small.stop()
    proc = run_iii(daemon.tmp, "trigger", "f", "--json", "@/dev/zero", timeout=60)
    problem, usage = proc.stderr.splitlines()  # a usage error: the problem, then usage
    assert proc.returncode == 2 and "larger than the daemon's frame limit" in problem
    assert usage.startswith("usage: iii trigger")
    proc = run_iii(daemon.tmp, "trigger", "f", "--timeout-ms", "1" + "0" * 30)
    assert proc.returncode == 2 and "--timeout-ms must be" in proc.stderr
    client = RawClient(daemon.socket_path)
    answer = client.call("f", timeout_ms=10**30)
    assert answer["error"]["code"] in ("bad_frame", "bad_request")
    answer = client.call("f", timeout_ms=2**31)
    assert answer["error"]["code"] == "bad_request"
    client.ping()


def test_a_60_mib_reply_is_read_whole(daemon: DaemonProcess) -> None:
    worker = RawClient(daemon.socket_path, timeout=60)
    worker.send({"type": "registerfunction", "id": "big"})
    worker.ping()
    reply = b'"' + b"y" * (60 << 20) + b'"'

    def answer() -> None:
        call = worker.recv()
        worker.send_raw(b'{"type":"invocationresult","invocation_id":"'
                        + call["invocation_id"].encode() + b'","result":' + reply + b"}\n")

    responder = threading.Thread(target=answer)
    responder.start()
    proc = subprocess.run([sys.executable, "-m", "iii_cli", "trigger", "big", "-o", "json"],
                          capture_output=True, timeout=120,
                          env=dict(os.environ, III_SOCKET=str(daemon.socket_path)))
    responder.join(10)
    assert proc.returncode == 0 and len(proc.stdout) == len(reply) + 1


# --- 8. the SDK -------------------------------------------------------------------------------


def test_the_sdk_backs_off_from_a_daemon_that_closes_at_once(short_tmp: Path) -> None:
    from benchmarks.attacks import attack_sdk_storm

    # Backoff from 100 ms: at once, then about 0.1 s and 0.3 s later (the next one
    # 0.4 s after that): three in 0.6 s, not thousands.
    [accepted] = attack_sdk_storm(REPO, short_tmp, window_s=0.6,
                                  initial_delay_ms=100).values()
    assert 2 <= accepted <= 4, accepted


def test_refused_registrations_show_on_their_handles(daemon: DaemonProcess) -> None:
    from iii_sdk import RegistrationRefused, register_worker

    worker = register_worker(str(daemon.socket_path))
    try:
        fine = worker.register_function("fine", lambda data: data)
        fine.ready(5)
        assert fine.state == "active" and fine.error is None
        never = worker.register_trigger({"type": "cron", "function_id": "fine",
                                         "config": {"expression": "0 0 0 30 2 *"}})
        with pytest.raises(RegistrationRefused) as refused:
            never.ready(5)
        assert refused.value.code == "trigger_registration_failed"
        assert never.state == "error" and "never fires" in str(never.error)
        reserved = worker.register_trigger_type("cron", "mine", Provider())
        with pytest.raises(RegistrationRefused):
            reserved.ready(5)
        bad_id = worker.register_function("bell\x07", lambda data: data)
        with pytest.raises(RegistrationRefused) as refused:
            bad_id.ready(5)
        assert "control character" in refused.value.message
        taken = RawClient(daemon.socket_path)
        taken.send({"type": "registerfunction", "id": "taken"})
        taken.ping()
        clash = worker.register_function("taken", lambda data: data)
        with pytest.raises(RegistrationRefused) as refused:
            clash.ready(5)
        assert refused.value.code == "FUNCTION_NAMESPACE_CONFLICT"
        good = worker.register_trigger({"type": "subscribe", "function_id": "fine",
                                        "config": {"topic": "t"}})
        good.ready(5)
        assert good.state == "active"
    finally:
        worker.shutdown()


class Provider:
    def register_trigger(self, config: Any) -> None: ...

    def unregister_trigger(self, config: Any) -> None: ...
