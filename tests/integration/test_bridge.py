"""Bridges with two real daemons: A (``[bridge]``) attached to B's worker listener.
Exposed functions, forwarded ones, state and streams on the bridged engine, the link
breaking and coming back, and what B may and may not do to A."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii_sdk import connect, register_worker
from tests.helpers import (
    DaemonProcess,
    ThreadDaemon,
    ask,
    free_port,
    run_iii,
    state_round_trip,
    wait_for,
)

BRIDGE = """
[bridge]
url = "ws://127.0.0.1:{port}"
service_id = "laptop"
expose = [{{ local_function = "a::hello", remote_function = "a::hello" }},
          {{ local_function = "a::boom", remote_function = "laptop::boom" }}]
forward = [{{ local_function = "remote::state::get", remote_function = "state::get" }},
           {{ local_function = "remote::slow", remote_function = "b::slow", timeout_ms = 300 }},
           {{ local_function = "remote::fails", remote_function = "b::fails" }}]
"""


class Pair:
    """B (a plain daemon on a WebSocket port) and A, bridged to it."""

    def __init__(self, tmp: Path, extra_config: str = "", process_a: bool = False) -> None:
        self.port = free_port()
        (tmp / "b").mkdir()
        (tmp / "a").mkdir()
        self.b = ThreadDaemon(tmp / "b", "--ws-port", str(self.port))
        (tmp / "a" / "config.toml").write_text(BRIDGE.format(port=self.port) + extra_config)
        kind = DaemonProcess if process_a else ThreadDaemon
        self.a: Any = kind(tmp / "a")

    def bridged(self) -> bool:
        return bool(ask(self.a, "engine::status")["bridge"]["state"] == "up")


@pytest.fixture
def pair(short_tmp: Path) -> Iterator[Pair]:
    pair = Pair(short_tmp)
    pair.b.start()
    pair.a.start()
    wait_for(pair.bridged, message="the bridge to come up")
    yield pair
    pair.a.stop()
    pair.b.stop()


def functions_on(daemon: Any) -> set[str]:
    return {row["function_id"] for row in ask(daemon, "engine::functions::list")["functions"]}


def test_an_exposed_function_is_callable_there_while_a_worker_serves_it_here(
        pair: Pair) -> None:
    assert "a::hello" not in functions_on(pair.b)  # nobody serves it on A yet
    worker = register_worker(str(pair.a.socket_path))
    worker.register_function("a::hello", lambda data: {"hello": data["name"]})
    try:
        wait_for(lambda: "a::hello" in functions_on(pair.b), message="a::hello on B")
        called = run_iii(pair.b.tmp, "trigger", "a::hello", "name=bob")
        assert called.returncode == 0, called.stderr
        assert json.loads(called.stdout) == {"hello": "bob"}
        workers = json.loads(run_iii(pair.b.tmp, "list", "workers", "-o", "json").stdout)
        assert any(w.get("name") == "laptop" for w in workers), workers
    finally:
        worker.shutdown()
    wait_for(lambda: "a::hello" not in functions_on(pair.b), message="a::hello gone from B")
    again = register_worker(str(pair.a.socket_path))
    again.register_function("a::hello", lambda data: "back")
    try:
        wait_for(lambda: "a::hello" in functions_on(pair.b), message="a::hello back on B")
        assert ask(pair.b, "a::hello") == "back"
    finally:
        again.shutdown()


def test_only_exposed_functions_can_be_called_from_there(pair: Pair) -> None:
    worker = register_worker(str(pair.a.socket_path))
    worker.register_function("a::secret", lambda data: "secret")
    worker.register_function("a::boom", lambda data: "boom")
    try:
        wait_for(lambda: "laptop::boom" in functions_on(pair.b), message="the exposed name")
        assert "a::secret" not in functions_on(pair.b)
        assert "a::boom" not in functions_on(pair.b)  # exposed under its remote name only
        assert json.loads(run_iii(pair.b.tmp, "trigger", "laptop::boom").stdout) == "boom"
    finally:
        worker.shutdown()


def test_a_hostile_engine_reaches_nothing_but_what_is_exposed(short_tmp: Path) -> None:
    """The other end is an engine of its own making: it calls the bridge's connection
    with every name it likes. Only the exposed function answers."""
    from tests.helpers import FakeEngine

    engine = FakeEngine().start()
    (short_tmp / "config.toml").write_text(
        f'[bridge]\nurl = "ws://127.0.0.1:{engine.port}"\nservice_id = "laptop"\n'
        'expose = [{ local_function = "a::hello", remote_function = "a::hello" }]\n')
    a = ThreadDaemon(short_tmp).start()
    worker = register_worker(str(a.socket_path))
    try:
        worker.register_function("a::hello", lambda data: "hello")
        worker.register_function("a::secret", lambda data: "secret")
        wait_for(lambda: "a::hello" in engine.registered, message="the exposure")
        answers = {name: engine.call(name) for name in (
            "a::hello", "a::secret", "engine::managed::list", "state::set",
            "engine::functions::list", "bridge.invoke")}
        assert answers.pop("a::hello") == {"result": "hello"}
        for name, answer in answers.items():
            assert answer["error"]["code"] == "function_not_found", (name, answer)
            assert "not exposed" in answer["error"]["message"]
    finally:
        worker.shutdown()
        a.stop()
        engine.stop()


def test_forwarded_calls_run_there_with_its_errors_and_their_timeout(pair: Pair) -> None:
    worker_b = register_worker(str(pair.b.socket_path))
    release = threading.Event()

    def slow(data: Any) -> str:
        release.wait(5)
        return "late"

    def fails(data: Any) -> None:
        raise ValueError("no such order")

    worker_b.register_function("b::slow", slow)
    worker_b.register_function("b::fails", fails)
    try:
        with connect(str(pair.b.socket_path)) as b:
            b.trigger({"function_id": "state::set",
                       "payload": {"scope": "s", "key": "k", "value": {"n": 1}}})
        got = run_iii(pair.a.tmp, "trigger", "remote::state::get", "scope=s", "key=k")
        assert got.returncode == 0 and json.loads(got.stdout) == {"n": 1}, got.stderr
        direct = run_iii(pair.b.tmp, "trigger", "b::fails")
        failed = run_iii(pair.a.tmp, "trigger", "remote::fails")
        assert failed.returncode == direct.returncode != 0
        mine, theirs = json.loads(failed.stderr), json.loads(direct.stderr)
        assert (mine["code"], mine["message"]) == (theirs["code"], theirs["message"])
        started = time.monotonic()
        timed_out = run_iii(pair.a.tmp, "trigger", "remote::slow")
        took = time.monotonic() - started
        assert json.loads(timed_out.stderr)["code"] == "TIMEOUT", timed_out.stderr
        assert "300 ms" in timed_out.stderr and took < 3
        release.set()
        via_invoke = run_iii(pair.a.tmp, "trigger", "bridge.invoke", "function_id=state::get",
                             'data={"scope": "s", "key": "k"}')
        assert json.loads(via_invoke.stdout) == {"n": 1}, via_invoke.stderr
        fired = run_iii(pair.a.tmp, "trigger", "bridge.invoke_async", "function_id=state::set",
                        'data={"scope": "s", "key": "k2", "value": 2}')
        assert fired.returncode == 0 and fired.stdout.strip() in ("", "null"), fired.stderr
        wait_for(lambda: ask(pair.b, "state::get", {"scope": "s", "key": "k2"}) == 2,
                 message="the async call")
    finally:
        release.set()
        worker_b.shutdown()


def test_state_and_streams_live_on_the_bridged_engine(short_tmp: Path) -> None:
    pair = Pair(short_tmp, '[state]\nbackend = "bridge"\n[streams]\nbackend = "bridge"\n')
    pair.b.start()
    pair.a.start()
    seen: list[Any] = []
    worker = register_worker(str(pair.a.socket_path))
    try:
        wait_for(pair.bridged, message="the bridge")
        worker.register_function("a::changed", seen.append)
        for trigger in ({"type": "state", "function_id": "a::changed",
                         "config": {"scope": "orders"}},
                        {"type": "stream", "function_id": "a::changed",
                         "config": {"stream_name": "chat"}}):
            worker.register_trigger(trigger).ready(5)

        def on_b() -> set[str]:
            found = ask(pair.b, "engine::registered-triggers::list")["registered_triggers"]
            return {t["id"] for t in found}

        # The bridge asks B to tell it of changes (within its 0.1 s sync).
        wait_for(lambda: {"bridge:laptop:state", "bridge:laptop:stream:chat"} <= on_b(),
                 message="the bridge's triggers on B")
        with connect(str(pair.a.socket_path)) as a, connect(str(pair.b.socket_path)) as b:
            state_round_trip(a, b)  # A's state is B's store
            assert b.trigger({"function_id": "state::list",
                              "payload": {"scope": "orders"}}) == [{"n": 2}]
            assert a.trigger({"function_id": "state::list_groups"}) == b.trigger(
                {"function_id": "state::list_groups"})
            item = {"stream_name": "chat", "group_id": "room", "item_id": "m1"}
            b.trigger({"function_id": "stream::set", "payload": {**item, "data": "hi"}})
            assert a.trigger({"function_id": "stream::get", "payload": item}) == "hi"
            assert a.trigger({"function_id": "stream::list_groups",
                              "payload": {"stream_name": "chat"}}) == ["room"]
        # A's triggers fired for the change made through A and the two made on B.
        wait_for(lambda: len(seen) == 3, message="three changes on A's triggers")
        kinds = sorted(str(e.get("event_type")) for e in seen)
        assert kinds == ["create", "state:created", "state:updated"], seen
    finally:
        worker.shutdown()
        pair.a.stop()
        pair.b.stop()


def test_the_link_breaks_and_comes_back(short_tmp: Path) -> None:
    pair = Pair(short_tmp, process_a=True)
    pair.a.start()  # B is not up yet: A starts anyway, its bridge down
    try:
        status = run_iii(pair.a.tmp, "daemon", "status").stdout
        assert f"bridge    ws://127.0.0.1:{pair.port} as laptop (" in status
        assert "up;" not in status
        failed = run_iii(pair.a.tmp, "trigger", "remote::state::get", "scope=s", "key=k")
        assert failed.returncode == 5, failed.stderr
        error = json.loads(failed.stderr)
        assert error["code"] == "bridge_unavailable" and str(pair.port) in error["message"]
        local = run_iii(pair.a.tmp, "trigger", "engine::status")
        assert local.returncode == 0  # what needs no bridge goes on
        worker = register_worker(str(pair.a.socket_path))
        worker.register_function("a::hello", lambda data: "hi")
        pair.b.start()
        wait_for(pair.bridged, timeout=15, message="A to connect once B is up")
        wait_for(lambda: "a::hello" in functions_on(pair.b), message="exposed on B")
        pair.b.stop()  # the link breaks
        wait_for(lambda: not pair.bridged(), message="A to see it")
        lost = run_iii(pair.a.tmp, "trigger", "remote::state::get", "scope=s", "key=k")
        assert lost.returncode == 5 and "bridge_unavailable" in lost.stderr
        pair.b = ThreadDaemon(pair.b.tmp, "--ws-port", str(pair.port)).start()
        wait_for(pair.bridged, timeout=15, message="A to reconnect")
        wait_for(lambda: "a::hello" in functions_on(pair.b), message="exposed again")
        worker.shutdown()
    finally:
        pair.a.stop()
        if pair.b.alive:
            pair.b.stop()
    log = pair.a.log()
    assert log.count("cannot reach ws://") == 1
    assert log.count("is down (") == 1 and log.count("is back after") == 1


def test_a_bridge_off_this_machine_needs_a_token_and_the_token_is_never_shown(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (short_tmp / "config.toml").write_text('[bridge]\nurl = "ws://10.1.2.3:49134"\n')
    refused = DaemonProcess(short_tmp)
    refused.start(wait=False)
    assert refused.proc is not None and refused.proc.wait(30) == 1
    lines = [line for line in refused.log().splitlines() if line.strip()]
    assert len(lines) == 1 and "needs a token ([bridge] token_env)" in lines[0], lines

    # B takes a token; A presents it from the variable token_env names.
    port = free_port()
    (short_tmp / "b").mkdir()
    (short_tmp / "b" / "config.toml").write_text('[websocket]\ntoken = "s3cret-token"\n')
    b = ThreadDaemon(short_tmp / "b", "--ws-port", str(port)).start()
    (short_tmp / "a").mkdir()
    (short_tmp / "a" / "config.toml").write_text(
        f'[bridge]\nurl = "ws://127.0.0.1:{port}"\ntoken_env = "IIITEST_BRIDGE_TOKEN"\n'
        'forward = [{ local_function = "remote::status", remote_function = "engine::status" }]\n')
    monkeypatch.setenv("IIITEST_BRIDGE_TOKEN", "s3cret-token")  # the daemon's environment
    a = DaemonProcess(short_tmp / "a").start()
    try:
        wait_for(lambda: ask(a, "engine::status")["bridge"]["state"] == "up",
                 message="the bridge with its token")
        assert run_iii(a.tmp, "trigger", "remote::status").returncode == 0
        shown = run_iii(a.tmp, "daemon", "status").stdout + \
            run_iii(a.tmp, "daemon", "status", "-o", "json").stdout
        assert "s3cret" not in shown and "up;" in shown
    finally:
        a.stop()
        b.stop()
    assert "s3cret" not in a.log()


def test_the_official_sdk_uses_bridged_state_as_it_would_there(short_tmp: Path) -> None:
    iii = pytest.importorskip("iii")
    ws_port = free_port()
    pair = Pair(short_tmp, '[state]\nbackend = "bridge"\n[streams]\nbackend = "bridge"\n')
    pair.b.start()
    pair.a = ThreadDaemon(pair.a.tmp, "--ws-port", str(ws_port)).start()
    official = iii.register_worker(f"ws://127.0.0.1:{ws_port}")
    try:
        wait_for(pair.bridged, message="the bridge")
        set_answer = official.trigger({"function_id": "state::set", "payload": {
            "scope": "cart", "key": "c1", "value": {"items": 2}}})
        with connect(str(pair.b.socket_path)) as b:
            assert b.trigger({"function_id": "state::get",
                              "payload": {"scope": "cart", "key": "c1"}}) == {"items": 2}
            direct = b.trigger({"function_id": "state::set", "payload": {
                "scope": "cart", "key": "c2", "value": {"items": 2}}})
        assert set_answer == direct  # the same shape as a call made on B
        assert official.trigger({"function_id": "state::get", "payload": {
            "scope": "cart", "key": "c1"}}) == {"items": 2}
        assert official.trigger({"function_id": "state::list",
                                 "payload": {"scope": "cart"}}) == [{"items": 2}] * 2
        item = {"stream_name": "carts", "group_id": "eu", "item_id": "c1"}
        official.trigger({"function_id": "stream::set", "payload": {**item, "data": 1}})
        with connect(str(pair.b.socket_path)) as b:
            assert b.trigger({"function_id": "stream::get", "payload": item}) == 1
            assert official.trigger({"function_id": "stream::list", "payload": {
                "stream_name": "carts", "group_id": "eu"}}) == b.trigger({
                    "function_id": "stream::list", "payload": {"stream_name": "carts",
                                                               "group_id": "eu"}})
    finally:
        official.shutdown()
        pair.a.stop()
        pair.b.stop()
