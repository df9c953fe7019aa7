"""The WebSocket listener, with the official iii SDK (PyPI ``iii-sdk``, import ``iii``).

Every combination of who serves and who calls: the official SDK over WebSocket, our SDK
over the Unix socket and over WebSocket, and the CLI.
"""

from __future__ import annotations

import json
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import iii
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from iii_sdk import III, InvocationError, TriggerAction, register_worker
from tests.helpers import DaemonProcess, ThreadDaemon, daemon_for, free_port, run_iii, wait_for


def connect(url: str, **options: Any) -> ClientConnection:
    """A raw WebSocket client, entered as the library wants (closed with .close())."""
    return ws_connect(url, **options).__enter__()


OFFICIAL = iii.InitOptions(worker_name="official", otel={"enabled": False})


@pytest.fixture
def ws_daemon(short_tmp: Path, request: pytest.FixtureRequest) -> Iterator[DaemonProcess]:
    daemon = daemon_for(request.node, short_tmp, "--ws-port", str(free_port()))
    yield daemon
    if daemon.alive:
        daemon.stop()


def ws_url(daemon: DaemonProcess) -> str:
    return f"ws://127.0.0.1:{daemon.extra[1]}"


@pytest.fixture
def official(ws_daemon: DaemonProcess) -> Iterator[Any]:
    worker = iii.register_worker(ws_url(ws_daemon), OFFICIAL)
    yield worker
    worker.shutdown()


@pytest.fixture
def ours_unix(ws_daemon: DaemonProcess) -> Iterator[III]:
    worker = register_worker(str(ws_daemon.socket_path))
    yield worker
    worker.shutdown()


@pytest.fixture
def ours_ws(ws_daemon: DaemonProcess) -> Iterator[III]:
    worker = register_worker(ws_url(ws_daemon))
    yield worker
    worker.shutdown()


def functions(worker: III) -> set[str]:
    listed = worker.trigger({"function_id": "engine::functions::list"})["functions"]
    return {f["function_id"] for f in listed}


def test_every_combination_of_server_and_caller(ws_daemon: DaemonProcess, official: Any,
                                               ours_unix: III, ours_ws: III) -> None:
    official.register_function("off::inc", lambda data: data + 1)
    ours_unix.register_function("unix::double", lambda data: data * 2)
    ours_ws.register_function("ws::neg", lambda data: -data)
    ours_unix.ping()
    ours_ws.ping()
    wait_for(lambda: "off::inc" in functions(ours_unix), message="the official registration")
    callers = {"official": official.trigger, "unix": ours_unix.trigger, "ws": ours_ws.trigger}
    expected = {"off::inc": 4, "unix::double": 6, "ws::neg": -3}
    for name, call in callers.items():
        for function_id, answer in expected.items():
            assert call({"function_id": function_id, "payload": 3}) == answer, (name,
                                                                                 function_id)
    for function_id, answer in expected.items():
        proc = run_iii(ws_daemon.tmp, "trigger", function_id, "--json", "3")
        assert json.loads(proc.stdout) == answer
        over_ws = run_iii(ws_daemon.tmp, "trigger", function_id, "--json", "3",
                          "--url", ws_url(ws_daemon))
        assert json.loads(over_ws.stdout) == answer
    workers = ours_unix.trigger({"function_id": "engine::workers::list"})["workers"]
    assert {w["transport"] for w in workers} == {"unix", "ws"}
    assert "official" in {w["name"] for w in workers}  # engine::workers::register, void


def test_error_codes_reach_the_official_sdk(official: Any, ours_unix: III) -> None:
    def boom(data: Any) -> Any:
        raise InvocationError("out_of_stock", "no more widgets")

    ours_unix.register_function("shop::buy", boom)
    ours_unix.ping()
    with pytest.raises(iii.InvocationError) as missing:
        official.trigger({"function_id": "no::such", "payload": {}})
    assert missing.value.code == "function_not_found"
    with pytest.raises(iii.InvocationError) as own:
        official.trigger({"function_id": "shop::buy", "payload": {}})
    assert (own.value.code, own.value.message) == ("out_of_stock", "no more widgets")
    receipt = official.trigger({"function_id": "shop::buy", "payload": {},
                                "action": iii.TriggerAction.Enqueue(queue="orders")})
    assert isinstance(receipt["messageReceiptId"], str)  # the failure goes to the queue


def test_official_handler_errors_and_void(official: Any, ours_unix: III) -> None:
    seen: list[Any] = []

    def broken(data: Any) -> Any:
        raise ValueError("official kaboom")

    official.register_function("off::broken", broken)
    official.register_function("off::collect", seen.append)
    wait_for(lambda: "off::collect" in functions(ours_unix), message="registrations")
    with pytest.raises(InvocationError) as err:
        ours_unix.trigger({"function_id": "off::broken", "payload": 1})
    assert (err.value.code, err.value.message) == ("invocation_failed", "official kaboom")
    assert official.trigger({"function_id": "off::collect", "payload": {"n": 1},
                             "action": iii.TriggerAction.Void()}) is None
    ours_unix.trigger({"function_id": "off::collect", "payload": {"n": 2},
                       "action": TriggerAction.Void()})
    wait_for(lambda: sorted(d["n"] for d in seen) == [1, 2], message="both void calls")


def test_official_triggers_register_fire_and_unregister(official: Any,
                                                       ours_unix: III) -> None:
    seen: list[Any] = []
    official.register_function("off::news", seen.append)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        trigger = official.register_trigger({"type": "subscribe", "function_id": "off::news",
                                             "config": {"topic": "news"}})

    def subscribers() -> int:
        answer = ours_unix.trigger({"function_id": "publish",
                                    "payload": {"topic": "nobody-listens"}})
        assert answer == {"subscribers": 0}
        listed = ours_unix.trigger({"function_id": "engine::registered-triggers::list"})
        return sum(1 for t in listed["registered_triggers"] if t["trigger_type"] == "subscribe")

    wait_for(lambda: subscribers() == 1, message="the official trigger")
    ours_unix.trigger({"function_id": "publish", "payload": {"topic": "news", "data": "hi"}})
    wait_for(lambda: seen == ["hi"], message="the official subscriber to run")
    trigger.unregister()
    wait_for(lambda: subscribers() == 0, message="the trigger to go")


def test_official_trigger_type_provider(ws_daemon: DaemonProcess, ours_unix: III) -> None:
    official = iii.register_worker(ws_url(ws_daemon), OFFICIAL)
    bound: list[str] = []

    class Webhooks(iii.triggers.TriggerHandler):  # type: ignore[misc]
        async def register_trigger(self, config: Any) -> None:
            bound.append(config.id)

        async def unregister_trigger(self, config: Any) -> None:
            bound.remove(config.id)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        official.register_trigger_type({"id": "webhook", "description": "POSTs"}, Webhooks())
    ours_unix.register_function("on::hook", lambda data: None)
    ours_unix.register_trigger({"id": "h1", "type": "webhook", "function_id": "on::hook",
                                "config": {"path": "/x"}})
    ours_unix.ping()

    def status() -> str | None:
        for t in ours_unix.trigger({"function_id": "engine::registered-triggers::list"}
                                   )["registered_triggers"]:
            if t["id"] == "h1":
                return t["status"]  # type: ignore[no-any-return]
        return None

    wait_for(lambda: status() == "active", message="the official provider to bind it")
    assert bound == ["h1"]
    ours_unix.trigger({"function_id": "engine::workers::list"})  # a round trip
    official.shutdown()
    wait_for(lambda: status() == "pending", message="pending once the provider left")


def test_a_ws_worker_leaving_mid_call_stops_its_callers(ws_daemon: DaemonProcess,
                                                       ours_unix: III) -> None:
    raw = connect(ws_url(ws_daemon))
    assert json.loads(raw.recv())["type"] == "workerregistered"
    raw.send(json.dumps({"type": "registerfunction", "id": "ws::slow"}))
    raw.send(json.dumps({"type": "ping"}))
    assert json.loads(raw.recv())["type"] == "pong"
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            ours_unix.trigger({"function_id": "ws::slow", "payload": None})
        except InvocationError as exc:
            outcome["code"] = exc.code

    thread = threading.Thread(target=call)
    thread.start()
    assert json.loads(raw.recv())["function_id"] == "ws::slow"
    raw.close()
    thread.join(10)
    assert outcome == {"code": "invocation_stopped"}
    assert "ws::slow" not in functions(ours_unix)


def test_raw_ws_frames_bad_binary_and_too_large(ws_daemon: DaemonProcess) -> None:
    raw = connect(ws_url(ws_daemon) + "/any/path", max_size=None)
    assert json.loads(raw.recv())["type"] == "workerregistered"
    raw.send("not json")
    assert json.loads(raw.recv())["code"] == "bad_frame"
    raw.send(b"\x00\x01")
    reply = json.loads(raw.recv())
    assert reply["code"] == "bad_frame" and "binary" in reply["message"]
    raw.send(json.dumps({"type": "invokefunction", "function_id": "x", "invocation_id": "i",
                         "timeout_ms": "soon"}))
    answer = json.loads(raw.recv())
    assert answer["type"] == "invocationresult" and answer["error"]["code"] == "bad_frame"
    raw.send(json.dumps({"type": "ping"}))
    assert json.loads(raw.recv()) == {"type": "pong"}
    # A message in fragments is reassembled (the official SDK fragments large ones).
    raw.send(['{"type": "invokefunction", "function_id": "engine::functions::list", ',
              '"invocation_id": "frag", "data": {"pad": "' + "y" * 100_000 + '"}}'])
    assert json.loads(raw.recv())["invocation_id"] == "frag"
    # WebSocket-level pings are answered (the official SDK drops the link without).
    assert raw.ping().wait(5)
    raw.close()


def test_ws_frames_over_the_limit(short_tmp: Path) -> None:
    daemon = ThreadDaemon(short_tmp, "--ws-port", str(free_port()), "--max-frame-bytes",
                           "1000").start()
    try:
        raw = connect(ws_url(daemon), max_size=None)
        raw.recv()
        raw.send(json.dumps({"type": "ping", "pad": "x" * 1500}))
        reply = json.loads(raw.recv())
        assert reply["code"] == "bad_frame" and "1000" in reply["message"]
        raw.send(json.dumps({"type": "ping"}))  # that frame cost only itself
        assert json.loads(raw.recv())["type"] == "pong"
        raw.send(json.dumps({"type": "ping", "pad": "x" * 2500}))  # past the library's cap
        with pytest.raises(ConnectionClosed):
            raw.recv(timeout=5)
        other = connect(ws_url(daemon))
        assert json.loads(other.recv())["type"] == "workerregistered"
        other.close()
    finally:
        daemon.stop()


def test_otel_socket_is_read_and_never_written(ws_daemon: DaemonProcess) -> None:
    otel = connect(ws_url(ws_daemon) + "/otel")
    otel.send(b"\x0a\x0b binary telemetry")
    otel.send("text too")
    with pytest.raises(TimeoutError):
        otel.recv(timeout=0.5)  # nothing, not even workerregistered
    otel.close()
    main = connect(ws_url(ws_daemon))
    assert json.loads(main.recv())["type"] == "workerregistered"
    main.close()


def test_reattach_retires_the_previous_connection(ws_daemon: DaemonProcess) -> None:
    first = connect(ws_url(ws_daemon))
    hello = json.loads(first.recv())
    first.send(json.dumps({"type": "registerfunction", "id": "w::f"}))
    second = connect(ws_url(ws_daemon))
    second.recv()
    second.send(json.dumps({"type": "reattach", "previous_worker_id": hello["worker_id"],
                            "reattach_token": hello["reattach_token"]}))
    second.send(json.dumps({"type": "registerfunction", "id": "w::f"}))
    second.send(json.dumps({"type": "ping"}))
    assert json.loads(second.recv()) == {"type": "pong"}  # no registrationrejected first
    with pytest.raises(ConnectionClosed):
        first.recv(timeout=5)
    second.close()


def test_token_required_when_configured(short_tmp: Path) -> None:
    (short_tmp / "config.toml").write_text('[websocket]\ntoken = "s3cret"\n')
    port = free_port()
    daemon = ThreadDaemon(short_tmp, "--ws-port", str(port)).start()
    try:
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}")
        assert refused.value.response.status_code == 401
        good = connect(f"ws://127.0.0.1:{port}",
                       additional_headers={"Authorization": "Bearer s3cret"})
        assert json.loads(good.recv())["type"] == "workerregistered"
        good.close()
    finally:
        daemon.stop()


def test_non_loopback_without_token_is_refused_but_the_daemon_runs(short_tmp: Path) -> None:
    (short_tmp / "config.toml").write_text('[websocket]\nhost = "0.0.0.0"\n')
    daemon = ThreadDaemon(short_tmp, "--ws-port", str(free_port())).start()
    try:
        status = json.loads(run_iii(short_tmp, "daemon", "status", "-o", "json").stdout)
        ws = status["listeners"]["websocket"]
        assert ws["state"] == "off" and "without a token" in ws["reason"]
        assert "without a token" in run_iii(short_tmp, "daemon", "status").stdout
    finally:
        daemon.stop()


def test_port_taken_daemon_still_serves_its_socket(short_tmp: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        daemon = ThreadDaemon(short_tmp, "--ws-port", str(port)).start()
        try:
            status = json.loads(run_iii(short_tmp, "daemon", "status", "-o", "json").stdout)
            ws = status["listeners"]["websocket"]
            assert ws["state"] == "off" and f":{port}" in ws["reason"]
            assert "in use" in ws["reason"]
        finally:
            daemon.stop()


@pytest.mark.daemon_process
def test_official_sdk_with_its_telemetry_socket_on(ws_daemon: DaemonProcess,
                                                   ours_unix: III) -> None:
    worker = iii.register_worker(ws_url(ws_daemon), iii.InitOptions(worker_name="telemetry"))
    try:
        worker.register_function("tel::echo", lambda data: data)
        wait_for(lambda: "tel::echo" in functions(ours_unix), message="the registration")
        assert ours_unix.trigger({"function_id": "tel::echo", "payload": [1, 2]}) == [1, 2]
        assert worker.trigger({"function_id": "tel::echo", "payload": "x"}) == "x"
    finally:
        worker.shutdown()
    ours_unix.ping()
    assert "ERROR" not in ws_daemon.log() and "Traceback" not in ws_daemon.log()


def test_official_sdk_replays_after_a_daemon_restart(short_tmp: Path) -> None:
    port = free_port()
    daemon = DaemonProcess(short_tmp, "--ws-port", str(port)).start()
    seen: list[Any] = []
    worker = iii.register_worker(f"ws://127.0.0.1:{port}", OFFICIAL)
    caller = register_worker(str(daemon.socket_path))
    try:
        worker.register_function("off::collect", seen.append)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            worker.register_trigger({"type": "subscribe", "function_id": "off::collect",
                                     "config": {"topic": "t"}})

        def trigger_ids() -> list[str]:
            listed = caller.trigger({"function_id": "engine::registered-triggers::list"})
            return [t["id"] for t in listed["registered_triggers"]]

        wait_for(lambda: "off::collect" in functions(caller) and trigger_ids(),
                 message="registration")
        before = trigger_ids()
        daemon.stop()
        daemon.start()
        wait_for(lambda: caller.connected and "off::collect" in functions(caller),
                 timeout=20, message="the official SDK to reconnect and replay")
        wait_for(lambda: trigger_ids() == before, message="the trigger replayed, same id")
        caller.trigger({"function_id": "publish", "payload": {"topic": "t", "data": 7}})
        wait_for(lambda: seen == [7], message="the replayed trigger to fire")
    finally:
        worker.shutdown()
        caller.shutdown()
        daemon.stop()


def test_our_ws_worker_shuts_down_cleanly(ws_daemon: DaemonProcess) -> None:
    import subprocess
    import sys

    script = (
        "from iii_sdk import register_worker\n"
        f"w = register_worker({ws_url(ws_daemon)!r})\n"
        "w.register_function('x', lambda d: d)\n"
        "w.ping()\n"
        "assert w.trigger({'function_id': 'x', 'payload': 5}) == 5\n"
        "w.shutdown()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no "Task was destroyed but it is pending!"
