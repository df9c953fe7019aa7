"""The stream socket against a real daemon: raw WebSocket clients join streams, get
their sync and every change, leave; join/leave triggers fire (and may refuse); the auth
function decides who comes in; the browser rules hold; a client that never reads is
cut off while the others go on."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from iii_sdk import register_worker
from tests.helpers import (
    IIIBIN,
    ThreadDaemon,
    ask,
    child_env,
    free_port,
    handshake,
    run_iii,
    wait_for,
)


def start(tmp: Path, config: str = "") -> tuple[ThreadDaemon, int]:
    port = free_port()
    (tmp / "config.toml").write_text(f"[streams]\n{config}")
    return ThreadDaemon(tmp, "--streams-port", str(port)).start(), port


@contextlib.contextmanager
def client(port: int, path: str = "/", **headers: str) -> Iterator[ClientConnection]:
    with connect(f"ws://127.0.0.1:{port}{path}", additional_headers=headers,
                 open_timeout=10) as ws:
        yield ws


def join(ws: ClientConnection, sid: str, stream: str, group: str,
         item: str | None = None) -> None:
    data = {"subscriptionId": sid, "streamName": stream, "groupId": group}
    if item is not None:
        data["id"] = item
    ws.send(json.dumps({"type": "join", "data": data}))


def frame(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout))
    return message


def no_frame(ws: ClientConnection, wait: float = 0.3) -> bool:
    """True when nothing arrives within ``wait`` seconds (after the fact it must not)."""
    try:
        ws.recv(wait)
    except TimeoutError:
        return True
    return False


def events(daemon: ThreadDaemon, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ask(daemon, "engine::events::list",
                                      {"event": kind})["events"]
    return found


def test_join_sync_changes_events_and_leave(short_tmp: Path) -> None:
    daemon, port = start(short_tmp)
    worker = register_worker(str(daemon.socket_path))
    try:
        def stream(op: str, **data: Any) -> Any:
            return worker.trigger({"function_id": f"stream::{op}",
                                   "payload": {"stream_name": "todo", "group_id": "inbox",
                                               **data}})

        stream("set", item_id="a", data={"title": "milk"})
        with client(port) as ws:
            join(ws, "all", "todo", "inbox")
            sync = frame(ws)
            assert sync == {"subscriptionId": "all", "type": "stream",
                            "timestamp": sync["timestamp"], "streamName": "todo",
                            "groupId": "inbox", "id": None,
                            "event": {"type": "sync", "data": [{"title": "milk"}]}}
            join(ws, "one", "todo", "inbox", "b")
            assert frame(ws)["event"] == {"type": "sync", "data": None}

            stream("set", item_id="a", data={"title": "oat milk"})
            update = frame(ws)
            assert (update["subscriptionId"], update["id"], update["event"]) == \
                ("all", "a", {"type": "update", "data": {"title": "oat milk"}})
            stream("set", item_id="b", data={"title": "bread"})
            created = [frame(ws), frame(ws)]  # the group's and the item's subscription
            assert sorted(f["subscriptionId"] for f in created) == ["all", "one"]
            assert all(f["event"] == {"type": "create", "data": {"title": "bread"}}
                       for f in created)
            stream("send", type="typing", data={"who": "ann"})
            sent = frame(ws)
            assert (sent["subscriptionId"], sent["event"]) == \
                ("all", {"type": "event", "event": {"type": "typing", "data": {"who": "ann"}}})
            stream("delete", item_id="a")
            deleted = frame(ws)
            assert (deleted["id"], deleted["event"]) == \
                ("a", {"type": "delete", "data": {"title": "oat milk"}})
            stream("set", item_id="x", data=1)
            stream("set", item_id="x", data=1, stream_name="other")  # another stream
            assert frame(ws)["id"] == "x"

            ws.send(json.dumps({"type": "leave", "data": {"subscriptionId": "all"}}))
            wait_for(lambda: len(events(daemon, "stream.left")) == 1)
            stream("set", item_id="a", data=2)
            assert no_frame(ws)  # left: the group's changes no longer come
            stream("set", item_id="b", data=3)
            assert frame(ws)["subscriptionId"] == "one"

            ws.send("not json")
            assert frame(ws)["error"]["message"] == "not a JSON object"
            join(ws, "one", "todo", "inbox")
            assert "joined already" in frame(ws)["error"]["message"]
            ws.send(json.dumps({"type": "join", "data": {"subscriptionId": "x"}}))
            assert "'streamName' must be a string" in frame(ws)["error"]["message"]
            status = ask(daemon, "engine::status")
            assert (status["stream_clients"], status["stream_subscriptions"]) == (1, 1)
            shown = run_iii(short_tmp, "daemon", "status")
            assert f"streams on ws://127.0.0.1:{port}" in shown.stdout
            assert "1 stream client (1 subscription)" in shown.stdout
        # Disconnecting leaves what was still joined.
        wait_for(lambda: len(events(daemon, "stream.left")) == 2)
        joined = events(daemon, "stream.joined")
        assert [(e["subscription_id"], e["stream_name"], e["group_id"], e["id"])
                for e in joined] == [("all", "todo", "inbox", None), ("one", "todo", "inbox", "b")]
        assert joined[0]["client"].startswith("127.0.0.1:")
    finally:
        worker.shutdown()
        daemon.stop()


def test_a_client_may_hold_so_many_subscriptions(short_tmp: Path) -> None:
    daemon, port = start(short_tmp, "max_subscriptions = 2\n")
    try:
        with client(port) as ws:
            for n in range(2):
                join(ws, f"s{n}", "s", f"g{n}")
                assert frame(ws)["event"]["type"] == "sync"
            join(ws, "s2", "s", "g2")
            refused = frame(ws)
            assert refused["type"] == "error" and refused["subscriptionId"] == "s2"
            assert "2 subscriptions" in refused["error"]["message"]
    finally:
        daemon.stop()


def test_join_and_leave_triggers_fire_and_a_join_function_may_refuse(short_tmp: Path) -> None:
    daemon, port = start(short_tmp)
    worker = register_worker(str(daemon.socket_path))
    seen: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()

    def on_join(data: dict[str, Any]) -> dict[str, Any]:
        with lock:
            seen.append(("join", data))
        return {"unauthorized": data["group_id"] == "secret"}

    def on_leave(data: dict[str, Any]) -> None:
        with lock:
            seen.append(("leave", data))

    try:
        worker.register_function("rooms::join", on_join)
        worker.register_function("rooms::leave", on_leave)
        worker.register_trigger({"type": "stream:join", "function_id": "rooms::join",
                                 "config": {}})
        worker.register_trigger({"type": "stream:leave", "function_id": "rooms::leave",
                                 "config": {}})
        worker.ping()
        with client(port) as ws:
            join(ws, "s1", "chat", "secret")
            assert frame(ws) == {"type": "unauthorized", "subscriptionId": "s1",
                                 "streamName": "chat", "groupId": "secret", "id": None}
            join(ws, "s2", "chat", "lobby", "m1")
            assert frame(ws)["event"]["type"] == "sync"
            worker.trigger({"function_id": "stream::set", "payload": {
                "stream_name": "chat", "group_id": "secret", "item_id": "m", "data": 1}})
            worker.trigger({"function_id": "stream::set", "payload": {
                "stream_name": "chat", "group_id": "lobby", "item_id": "m1", "data": 2}})
            assert frame(ws)["groupId"] == "lobby"  # nothing of the refused group came
        wait_for(lambda: any(kind == "leave" for kind, _ in seen))  # on disconnect
        with lock:
            assert [(kind, d["group_id"]) for kind, d in seen] == \
                [("join", "secret"), ("join", "lobby"), ("leave", "lobby")]
            assert seen[1][1] == {"subscription_id": "s2", "stream_name": "chat",
                                  "group_id": "lobby", "id": "m1", "context": None}
        refused = events(daemon, "stream.refused")
        assert [(e["subscription_id"], e["reason"]) for e in refused] == [("s1", "unauthorized")]
    finally:
        worker.shutdown()
        daemon.stop()


def test_the_auth_function_gives_a_context_or_refuses(short_tmp: Path) -> None:
    daemon, port = start(short_tmp, 'auth_function_id = "app::stream_auth"\n')
    worker = register_worker(str(daemon.socket_path))
    inputs: list[dict[str, Any]] = []
    joins: list[dict[str, Any]] = []

    def auth(data: dict[str, Any]) -> dict[str, Any]:
        inputs.append(data)
        token = data["query_params"].get("token", [""])[0]
        if token != "s3cret":
            raise PermissionError("bad token")
        return {"context": {"user": "ann"}}

    try:
        worker.register_function("app::stream_auth", auth)
        worker.register_function("app::joined", lambda data: joins.append(data))
        worker.register_trigger({"type": "stream:join", "function_id": "app::joined",
                                 "config": {}})
        worker.ping()
        with client(port, "/live?token=nope") as ws:
            assert frame(ws) == {"type": "unauthorized"}
            with pytest.raises(Exception) as closed:
                ws.recv(10)
            assert "1008" in str(closed.value) and "bad token" in str(closed.value)
        with client(port, "/live?token=s3cret", **{"X-App": "web"}) as ws:
            join(ws, "s", "feed", "all")
            assert frame(ws)["event"]["type"] == "sync"
        assert joins[0]["context"] == {"user": "ann"}
        seen = inputs[-1]
        assert seen["path"] == "/live?token=s3cret"
        assert seen["query_params"] == {"token": ["s3cret"]}
        assert seen["headers"]["x-app"] == "web"
        assert seen["addr"].startswith("127.0.0.1:")
    finally:
        worker.shutdown()
        daemon.stop()


def test_pages_come_in_only_from_allowed_origins(short_tmp: Path) -> None:
    from websockets.exceptions import InvalidStatus

    daemon, port = start(short_tmp, 'allowed_origins = ["http://127.0.0.1:8000"]\n')
    try:
        with pytest.raises(InvalidStatus) as refused, \
                client(port, Origin="https://evil.example"):
            pass
        assert refused.value.response.status_code == 403
        assert b"[streams] allowed_origins" in refused.value.response.body
        assert handshake(port, host="evil.example") == 403  # a DNS-rebinding page
        with client(port, Origin="http://127.0.0.1:8000") as ws:
            join(ws, "s", "a", "b")
            assert frame(ws)["event"]["type"] == "sync"
    finally:
        daemon.stop()


def _silent_client(port: int) -> socket.socket:
    """A WebSocket client that does its handshake and joins, then never reads: its
    receive buffer is as small as the kernel allows."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)  # byte by byte: nothing after the handshake is read
    assert b" 101 " in answer
    payload = json.dumps({"type": "join", "data": {"subscriptionId": "s",
                                                   "streamName": "big", "groupId": "g"}})
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload.encode()))
    sock.sendall(bytes([0x81, 0x80 | len(body)]) + mask + body)
    return sock


def test_a_client_that_never_reads_is_cut_off_and_slows_no_one(short_tmp: Path) -> None:
    daemon, port = start(short_tmp, "client_buffer_bytes = 65536\n")
    worker = register_worker(str(daemon.socket_path))
    silent = _silent_client(port)
    try:
        with client(port) as ws:
            join(ws, "s", "big", "g")
            assert frame(ws)["event"]["type"] == "sync"
            wait_for(lambda: ask(daemon, "engine::status")["stream_subscriptions"] == 2)
            value = "x" * 16_384
            # Changes go out until the silent one is cut (the kernel's buffers take some
            # MiB first, as many as it grants; here about 3): at most 64 MiB.
            for n in range(4096):
                worker.trigger({"function_id": "stream::set", "payload": {
                    "stream_name": "big", "group_id": "g", "item_id": str(n), "data": value}})
                assert frame(ws)["id"] == str(n)  # the reading client keeps up
                if n % 64 == 63 and ask(daemon, "engine::status")["stream_clients"] == 1:
                    break
            # The silent one was cut off while the other still reads.
            assert ask(daemon, "engine::status")["stream_clients"] == 1
        wait_for(lambda: len(events(daemon, "stream.left")) == 2)  # cut off, then closed
    finally:
        silent.close()
        worker.shutdown()
        daemon.stop()


def test_iii_watch_shows_joins_and_leaves(short_tmp: Path) -> None:
    daemon, port = start(short_tmp)
    watch = subprocess.Popen([IIIBIN, "watch", "--kind", "stream", "-o", "pretty"],
                             stdout=subprocess.PIPE, text=True, env=child_env(short_tmp))
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in watch.stdout or ()],
                     daemon=True).start()
    try:
        wait_for(lambda: ask(daemon, "engine::status")["watchers"] == 1)
        with client(port) as ws:
            join(ws, "s1", "todo", "inbox", "a")
            assert frame(ws)["event"]["type"] == "sync"
            ws.send(json.dumps({"type": "leave", "data": {"subscriptionId": "s1"}}))
            joined, left = lines.get(timeout=10), lines.get(timeout=10)
        assert " join " in joined and "todo/inbox/a s1 from 127.0.0.1:" in joined
        assert " left " in left and "todo/inbox/a s1 from 127.0.0.1:" in left
    finally:
        watch.send_signal(signal.SIGINT)
        watch.wait(10)
        daemon.stop()


def test_a_change_on_another_daemon_reaches_the_clients_through_redis(
        short_tmp: Path, redis_server: Any) -> None:
    """Two daemons share streams through Redis: a client of B's stream socket joins, and
    a write on A reaches it once (each daemon tells its own clients)."""
    port = free_port()
    a = ThreadDaemon(short_tmp / "a", "--redis-url", redis_server.url).start()
    b = ThreadDaemon(short_tmp / "b", "--redis-url", redis_server.url,
                     "--streams-port", str(port)).start()
    try:
        ask(a, "stream::set", {"stream_name": "todo", "group_id": "inbox", "item_id": "a",
                               "data": 1})
        with client(port) as ws:
            join(ws, "s", "todo", "inbox")
            assert frame(ws)["event"] == {"type": "sync", "data": [1]}  # read from Redis
            ask(a, "stream::set", {"stream_name": "todo", "group_id": "inbox",
                                   "item_id": "b", "data": 2})
            change = frame(ws)
            assert (change["id"], change["event"]) == ("b", {"type": "create", "data": 2})
            assert no_frame(ws)  # once, not once per daemon
    finally:
        b.stop()
        a.stop()


def test_past_max_clients_a_client_is_told_to_come_back_later(short_tmp: Path) -> None:
    from websockets.exceptions import ConnectionClosed

    daemon, port = start(short_tmp, "max_clients = 1\n")
    try:
        with client(port) as first:
            join(first, "s", "a", "b")
            assert frame(first)["event"]["type"] == "sync"
            with client(port) as second, pytest.raises(ConnectionClosed) as closed:
                second.recv(10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            assert "max_clients" in closed.value.rcvd.reason
        wait_for(lambda: ask(daemon, "engine::status")["stream_clients"] == 0)
        with client(port) as again:  # the first went: room again
            join(again, "s", "a", "b")
            assert frame(again)["event"]["type"] == "sync"
    finally:
        daemon.stop()
