"""The daemon over its real Unix socket, spoken to frame by frame."""

from __future__ import annotations

import json
import os
import random
import socket
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import DaemonProcess, RawClient


def test_malformed_frames_get_errors_and_the_connection_stays_open(
        daemon: DaemonProcess) -> None:
    client = RawClient(daemon.socket_path)
    for frame in [b"nope\n", b"[]\n", b'{"type":"x"}\n', b'{"type":"registerfunction"}\n']:
        client.send_raw(frame)
        reply = client.recv()
        assert reply["type"] == "error" and reply["code"] == "bad_frame", reply
    client.ping()


def test_a_call_travels_between_two_raw_connections(daemon: DaemonProcess) -> None:
    worker = RawClient(daemon.socket_path)
    caller = RawClient(daemon.socket_path)
    worker.send({"type": "registerfunction", "id": "echo"})
    worker.ping()
    caller.send({"type": "invokefunction", "function_id": "echo", "invocation_id": "c1",
                 "data": {"x": [1, 2]}, "metadata": {"m": 1}})
    invoke = worker.recv()
    assert invoke["type"] == "invokefunction" and invoke["data"] == {"x": [1, 2]}
    assert invoke["metadata"] == {"m": 1} and invoke["invocation_id"] != "c1"
    worker.send({"type": "invocationresult", "invocation_id": invoke["invocation_id"],
                 "result": "pong"})
    answer = caller.recv()
    assert answer == {"type": "invocationresult", "invocation_id": "c1", "function_id": "echo",
                      "result": "pong"}


def test_an_oversized_frame_costs_only_itself(short_tmp: os.PathLike[str]) -> None:
    """A frame over the limit is read past and answered; its connection, and every
    other, goes on (issue 24: it used to close the connection)."""
    from pathlib import Path
    daemon = DaemonProcess(Path(short_tmp), "--max-frame-bytes", "1000").start()
    try:
        other = RawClient(daemon.socket_path)
        big = RawClient(daemon.socket_path)
        big.send_raw(b'{"type":"ping","pad":"' + b"x" * 2000 + b'"}\n')
        reply = big.recv()
        assert reply["code"] == "bad_frame" and "1000" in reply["message"]
        big.ping()  # the same connection, still served
        other.ping()
    finally:
        daemon.stop()


def test_a_frame_near_64_mib_is_routed(daemon: DaemonProcess) -> None:
    worker = RawClient(daemon.socket_path, timeout=30)
    caller = RawClient(daemon.socket_path, timeout=30)
    worker.send({"type": "registerfunction", "id": "big"})
    worker.ping()
    payload = "z" * (60 * 1024 * 1024)
    caller.send({"type": "invokefunction", "function_id": "big", "data": payload})
    invoke = worker.recv()
    assert len(invoke["data"]) == len(payload)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=20))
def test_random_bytes_do_not_hurt_the_daemon(daemon: DaemonProcess,
                                             chunks: list[bytes]) -> None:
    fuzzer = socket.socket(socket.AF_UNIX)
    fuzzer.connect(os.fspath(daemon.socket_path))
    try:
        for chunk in chunks:
            fuzzer.sendall(chunk + (b"\n" if random.random() < 0.5 else b""))
    except OSError:
        pass  # the daemon may close a connection that sent an oversized frame
    finally:
        fuzzer.close()
    assert daemon.alive
    RawClient(daemon.socket_path).ping()


def test_a_client_that_never_reads_is_paused_and_others_are_not_slowed(
        short_tmp: os.PathLike[str]) -> None:
    from pathlib import Path
    daemon = DaemonProcess(Path(short_tmp), "--max-frame-bytes", "65536").start()
    try:
        lazy = socket.socket(socket.AF_UNIX)
        lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        lazy.connect(os.fspath(daemon.socket_path))
        lazy.settimeout(2)
        # Ask for many answers and never read them: the daemon must stop reading us
        # (our writes block), neither buffer without end nor cut us off.
        frame = b'{"type":"invokefunction","function_id":"engine::functions::list",' \
                b'"invocation_id":"x","pad":"' + b"p" * 100 + b'"}\n'
        paused = False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                lazy.sendall(frame * 200)
            except TimeoutError:
                paused = True
                break
        assert paused, "the daemon kept reading a client that reads nothing"
        other = RawClient(daemon.socket_path)
        started = time.monotonic()
        other.ping()
        assert time.monotonic() - started < 2.0
        assert daemon.alive and "closing connection" not in daemon.log()
        # Paused, not dropped: reading brings its answers.
        lazy.settimeout(5)
        reader = lazy.makefile("rb")
        assert json.loads(reader.readline())["type"] == "workerregistered"
        assert json.loads(reader.readline())["invocation_id"] == "x"
    finally:
        daemon.stop()
