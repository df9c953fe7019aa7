"""Triggers through a real daemon, with SDK workers in this and other processes."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from iii_sdk import III, InitOptions, TriggerConfig, register_worker
from iii_sdk.options import ReconnectionConfig
from tests.helpers import DaemonProcess, RawClient, ThreadDaemon, spawn_worker, wait_for


class Recorder:
    """Functions that remember what they were called with."""

    def __init__(self) -> None:
        self.calls: dict[str, list[Any]] = {}
        self.lock = threading.Lock()

    def handler(self, function_id: str, answer: Any = None) -> Any:
        def record(data: Any) -> Any:
            with self.lock:
                self.calls.setdefault(function_id, []).append(data)
            return answer
        return record

    def of(self, function_id: str) -> list[Any]:
        with self.lock:
            return list(self.calls.get(function_id, []))


@pytest.fixture
def worker(daemon: DaemonProcess) -> Iterator[III]:
    w = register_worker(str(daemon.socket_path), InitOptions(connect_timeout_s=5))
    yield w
    w.shutdown()


def served(worker: III, recorder: Recorder, *function_ids: str, answer: Any = None) -> None:
    for function_id in function_ids:
        worker.register_function(function_id, recorder.handler(function_id, answer))
    worker.ping()


def test_cron_fires_every_second_with_its_payload(worker: III) -> None:
    seen = Recorder()
    served(worker, seen, "tick")
    trigger = worker.register_trigger({"type": "cron", "function_id": "tick",
                                       "config": {"expression": "* * * * * *"}})
    wait_for(lambda: len(seen.of("tick")) >= 2, timeout=5, message="two cron ticks")
    first, second = seen.of("tick")[:2]
    assert first["trigger"] == "cron" and first["job_id"] == trigger.id
    scheduled = [datetime.fromisoformat(p["scheduled_time"]) for p in (first, second)]
    assert (scheduled[1] - scheduled[0]).total_seconds() == 1.0
    assert scheduled[0].microsecond == 0  # on the second, no drift
    trigger.unregister()
    worker.ping()  # handled in order: the binding is gone (unit tests cover the schedule)
    assert not any(b["id"] == trigger.id for b in bindings(worker))


def bindings(worker: III) -> list[dict[str, Any]]:
    listed = worker.trigger({"function_id": "engine::registered-triggers::list"})
    return listed["registered_triggers"]  # type: ignore[no-any-return]


def test_state_trigger_payload(worker: III) -> None:
    seen = Recorder()
    served(worker, seen, "on_order")
    worker.register_trigger({"type": "state", "function_id": "on_order",
                             "config": {"scope": "orders", "key": "o1"}})
    worker.ping()
    worker.trigger({"function_id": "state::set",
                    "payload": {"scope": "orders", "key": "o1", "value": {"total": 3}}})
    wait_for(lambda: seen.of("on_order"), message="the state trigger")
    assert seen.of("on_order") == [{"type": "state", "event_type": "state:created",
                                    "scope": "orders", "key": "o1", "old_value": None,
                                    "new_value": {"total": 3}}]


def test_publish_reaches_subscribers_in_other_processes(daemon: DaemonProcess,
                                                        worker: III) -> None:
    seen = Recorder()
    served(worker, seen, "here")
    worker.register_trigger({"type": "subscribe", "function_id": "here",
                             "config": {"topic": "news"}})
    proc = spawn_worker(daemon.tmp)  # serves math::echo in another process
    try:
        worker.register_trigger({"type": "subscribe", "function_id": "math::echo",
                                 "config": {"topic": "news"}})
        worker.ping()
        answer = worker.trigger({"function_id": "publish",
                                 "payload": {"topic": "news", "data": {"headline": "hi"}}})
        assert answer == {"subscribers": 2}
        wait_for(lambda: seen.of("here") == [{"headline": "hi"}], message="the subscriber")
        wait_for(lambda: any(e["function_id"] == "math::echo" and e["status"] == "ok"
                             for e in events(worker, "invocation.finished")),
                 message="the other process's subscriber")
    finally:
        proc.terminate()
        proc.wait(10)


def events(worker: III, kind: str) -> list[dict[str, Any]]:
    return worker.trigger({"function_id": "engine::events::list",  # type: ignore[no-any-return]
                           "payload": {"event": kind}})["events"]


@pytest.mark.parametrize("verdict, runs", [(True, True), (False, False), (0, False),
                                           ({"ok": 1}, True)])
def test_condition_gates_the_target(worker: III, verdict: Any, runs: bool) -> None:
    seen = Recorder()
    served(worker, seen, "target")
    served(worker, seen, "gate", answer=verdict)
    worker.register_trigger({"type": "subscribe", "function_id": "target",
                             "config": {"topic": "t", "condition_function_id": "gate"}})
    worker.ping()
    worker.trigger({"function_id": "publish", "payload": {"topic": "t", "data": {"n": 1}}})
    wait_for(lambda: seen.of("gate"), message="the condition to be asked")
    assert seen.of("gate") == [{"n": 1}]
    if runs:
        wait_for(lambda: seen.of("target") == [{"n": 1}], message="the target")
    else:
        wait_for(lambda: events(worker, "trigger.skipped"), message="the skip event")
        assert seen.of("target") == []
        [skip] = events(worker, "trigger.skipped")
        assert "returned" in skip["reason"]


def test_worker_triggers_go_with_the_worker_daemon_owned_stay(daemon: DaemonProcess,
                                                              worker: III) -> None:
    proc = spawn_worker(daemon.tmp)
    worker.trigger({"function_id": "engine::register_trigger",
                    "payload": {"id": "kept", "type": "subscribe", "function_id": "math::echo",
                                "config": {"topic": "x"}}})
    other = register_worker(str(daemon.socket_path))
    other.register_trigger({"id": "theirs", "type": "subscribe", "function_id": "math::echo",
                            "config": {"topic": "x"}})
    other.ping()
    assert {b["id"] for b in bindings(worker)} == {"kept", "theirs"}
    other.shutdown()
    wait_for(lambda: {b["id"] for b in bindings(worker)} == {"kept"},
             message="the worker's trigger to go")
    proc.send_signal(signal.SIGKILL)  # the target's worker dies: the trigger stays
    proc.wait(10)
    assert [b["id"] for b in bindings(worker)] == ["kept"]


class WebhookProvider:
    def __init__(self) -> None:
        self.bound: dict[str, TriggerConfig] = {}

    def register_trigger(self, cfg: TriggerConfig) -> None:
        if cfg.config.get("path") == "/forbidden":
            raise ValueError("that path is not allowed")
        self.bound[cfg.id] = cfg

    async def unregister_trigger(self, cfg: TriggerConfig) -> None:
        self.bound.pop(cfg.id, None)


def status_of(worker: III, trigger_id: str) -> str | None:
    for binding in bindings(worker):
        if binding["id"] == trigger_id:
            return binding["status"]  # type: ignore[no-any-return]
    return None


def test_custom_trigger_type_pending_bound_pending(daemon: DaemonProcess,
                                                   worker: III) -> None:
    seen = Recorder()
    served(worker, seen, "on_hook")
    worker.trigger({"function_id": "engine::register_trigger",
                    "payload": {"id": "hook1", "type": "webhook", "function_id": "on_hook",
                                "config": {"path": "/a"}}})
    assert status_of(worker, "hook1") == "pending"

    provider_worker = register_worker(str(daemon.socket_path))
    provider = WebhookProvider()
    try:
        provider_worker.register_trigger_type("webhook", "calls a function on POST", provider)
        wait_for(lambda: status_of(worker, "hook1") == "active", message="binding")
        assert provider.bound["hook1"].function_id == "on_hook"
        # The provider fires its trigger with an ordinary call.
        cfg = provider.bound["hook1"]
        provider_worker.trigger({"function_id": cfg.function_id, "payload": {"body": "x"}})
        assert seen.of("on_hook") == [{"body": "x"}]
        # A refusal comes back as an error status.
        worker.register_trigger({"id": "bad", "type": "webhook", "function_id": "on_hook",
                                 "config": {"path": "/forbidden"}})
        wait_for(lambda: status_of(worker, "bad") == "error", message="the refusal")
        # Unregistering is forwarded (to an async provider method).
        worker.trigger({"function_id": "engine::unregister_trigger",
                        "payload": {"id": "hook1"}})
        wait_for(lambda: "hook1" not in provider.bound, message="the provider to unbind")
        worker.trigger({"function_id": "engine::register_trigger",
                        "payload": {"id": "hook2", "type": "webhook", "function_id": "on_hook",
                                    "config": {"path": "/b"}}})
        wait_for(lambda: status_of(worker, "hook2") == "active", message="hook2")
    finally:
        provider_worker.shutdown()
    wait_for(lambda: status_of(worker, "hook2") == "pending", message="back to pending")


def test_triggers_and_state_survive_a_daemon_restart(short_tmp: Path) -> None:
    daemon = ThreadDaemon(short_tmp).start()
    fast = InitOptions(reconnection_config=ReconnectionConfig(initial_delay_ms=50,
                                                              max_delay_ms=200))
    worker = register_worker(str(daemon.socket_path), fast)
    seen = Recorder()
    try:
        served(worker, seen, "tick")
        worker.trigger({"function_id": "engine::register_trigger",
                        "payload": {"id": "every-second", "type": "cron",
                                    "function_id": "tick",
                                    "config": {"expression": "* * * * * *"}}})
        worker.trigger({"function_id": "state::set",
                        "payload": {"scope": "s", "key": "k", "value": "kept"}})
        daemon.stop()
        daemon.start()
        wait_for(lambda: worker.connected, message="the worker to reconnect")
        worker.ping()
        assert [b["id"] for b in bindings(worker)] == ["every-second"]
        assert worker.trigger({"function_id": "state::get",
                               "payload": {"scope": "s", "key": "k"}}) == "kept"
        before = len(seen.of("tick"))
        wait_for(lambda: len(seen.of("tick")) > before, timeout=5,
                 message="cron to fire after the restart")
    finally:
        worker.shutdown()
        daemon.stop()


def test_acknowledged_writes_survive_a_killed_daemon(short_tmp: Path) -> None:
    """An answer that depends on a write leaves only after the write committed: every
    acknowledged state::set of a pipelined burst is there after SIGKILL and a restart,
    and a read pipelined behind the writes sees the last one."""
    daemon = DaemonProcess(short_tmp).start()
    client = RawClient(daemon.socket_path, timeout=30)
    burst = b"".join(json.dumps({
        "type": "invokefunction", "function_id": "state::set", "invocation_id": f"s{i}",
        "data": {"scope": "burst", "key": f"k{i % 50}", "value": i}}).encode() + b"\n"
        for i in range(2_000))
    client.send_raw(burst + json.dumps({
        "type": "invokefunction", "function_id": "state::get", "invocation_id": "read",
        "data": {"scope": "burst", "key": "k49"}}).encode() + b"\n")
    answers: dict[str, Any] = {}
    while len(answers) < 2_001:
        message = client.recv()
        answers[message["invocation_id"]] = message
    daemon.kill()  # no shutdown: only what was committed is on disk
    client.close()
    assert all("error" not in a for a in answers.values())
    assert answers["read"]["result"] == 1_999
    daemon.start()
    client = RawClient(daemon.socket_path)
    try:
        values = client.call("state::list", {"scope": "burst"})["result"]
        assert sorted(values) == [1_950 + k for k in range(50)]
    finally:
        client.close()
        daemon.stop()
