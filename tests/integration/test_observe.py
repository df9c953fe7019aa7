"""Observers (observe.v1) against a real daemon: through the official SDK 0.25 over
WebSocket and through ours over the Unix socket, with the same code."""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import iii
import pytest
from iii_helpers.observability import ReconnectionConfig as OfficialReconnection

import iii_sdk
from iii_sdk import InitOptions, register_worker
from iii_sdk.options import ReconnectionConfig
from tests.helpers import (
    ThreadDaemon,
    child_env,
    free_port,
    official_worker,
    run_iii,
    wait_for,
    wait_served,
)

KINDS = ["official", "ours"]


class Seen:
    """What a target received, thread-safe."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.metadata: list[Any] = []
        self._lock = threading.Lock()

    def handler(self, data: Any, metadata: Any = None) -> None:
        with self._lock:
            self.items.append(data)
            self.metadata.append(metadata)

    def wait(self, count: int) -> list[Any]:
        wait_for(lambda: len(self.items) >= count, message=f"{count} activations")
        return list(self.items)


class Daemon:
    def __init__(self, tmp: Path, ws_port: int | None = None) -> None:
        self.tmp = tmp
        self.ws_port = ws_port or free_port()
        self.process = ThreadDaemon(tmp, "--ws-port", str(self.ws_port)).start()

    def client(self, kind: str) -> Any:
        if kind == "official":
            return official_worker(self.ws_port, reconnection_config=OfficialReconnection(
                initial_delay_ms=50, max_delay_ms=200))
        worker = register_worker(str(self.process.socket_path), InitOptions(
            worker_name="ours", reconnection_config=ReconnectionConfig(
                initial_delay_ms=50, max_delay_ms=200)))
        worker.wait_until_connected(5)
        return worker

    def observers(self) -> list[dict[str, Any]]:
        done = run_iii(self.tmp, "list", "observers", "-o", "json")
        assert done.returncode == 0, done.stderr
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows

    def observer(self, observer_id: str) -> dict[str, Any] | None:
        return next((o for o in self.observers() if o["id"] == observer_id), None)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    running = Daemon(tmp_path_factory.mktemp("observe"))
    yield running
    running.process.stop()


@pytest.fixture(params=KINDS)
def sdk(request: pytest.FixtureRequest, daemon: Daemon) -> Iterator[tuple[str, Any]]:
    client = daemon.client(request.param)
    yield request.param, client
    client.shutdown()


def rejection() -> tuple[type[Exception], ...]:
    return (iii.ObserveRejection, iii_sdk.ObserveRejection)


def charge(data: dict[str, Any]) -> dict[str, Any]:
    if data["amount"] >= 500:
        raise RuntimeError("card declined")
    return {"ok": True, "amount": data["amount"]}


def call(client: Any, function_id: str, payload: Any) -> Any:
    try:
        return client.trigger({"function_id": function_id, "payload": payload})
    except Exception as exc:
        return exc


def test_filters_on_input_output_and_caller(sdk: tuple[str, Any]) -> None:
    kind, client = sdk
    pay, relay = f"{kind}-f::charge", f"{kind}-f::relay"
    seen = Seen()
    client.register_function(pay, charge)
    client.register_function(relay, lambda data: client.trigger(
        {"function_id": pay, "payload": data}))
    client.register_function(f"{kind}-f::alert", seen.handler)
    handles = [
        client.observe({"function_id": pay, "filters": {"input.amount": {"$gte": 50}}},
                       f"{kind}-f::alert", {"id": f"{kind}-by-input"}),
        client.observe({"function_id": pay, "filters": {"output.amount": {"$eq": 70}}},
                       f"{kind}-f::alert", {"id": f"{kind}-by-output"}),
        client.observe({"function_id": pay,
                        "filters": {"caller.function_id": {"$eq": relay}}},
                       {"function_id": f"{kind}-f::alert"}, {"id": f"{kind}-by-caller"}),
    ]
    for handle in handles:
        handle.ready(5)
        assert handle.state == "active"
    for amount in (10, 50, 70):
        assert call(client, pay, {"amount": amount}) == {"ok": True, "amount": amount}
    assert call(client, relay, {"amount": 60}) == {"ok": True, "amount": 60}
    seen.wait(5)
    by_observer: dict[str, list[int]] = {}
    for envelope in seen.items:
        by_observer.setdefault(envelope["observer_id"], []).append(envelope["input"]["amount"])
        assert envelope["function_id"] == pay and envelope["status"] == "success"
        assert envelope["activation_id"] and envelope["invocation_id"]
    assert sorted(by_observer[f"{kind}-by-input"]) == [50, 60, 70]
    assert by_observer[f"{kind}-by-output"] == [70]
    assert by_observer[f"{kind}-by-caller"] == [60]
    for handle in handles:
        handle.dispose()


def test_on_error_sees_failures_only_and_capture_limits_what_travels(
        sdk: tuple[str, Any]) -> None:
    kind, client = sdk
    pay = f"{kind}-e::charge"
    seen = Seen()
    client.register_function(pay, charge)
    client.register_function(f"{kind}-e::alert", seen.handler)
    handle = client.observe({"function_id": pay, "on": "error",
                             "capture": ["input", "error"]},
                            f"{kind}-e::alert", {"metadata": {"team": "payments"}})
    handle.ready(5)
    for amount in (10, 800, 20):
        call(client, pay, {"amount": amount})
    [envelope] = seen.wait(1)
    assert envelope["status"] == "error" and envelope["input"] == {"amount": 800}
    assert "card declined" in envelope["error"]["message"]
    assert not {"output", "caller", "metadata"} & set(envelope)
    assert seen.metadata == [{"team": "payments"}]  # the observer's metadata sidecar
    handle.dispose()


def test_pending_until_the_target_registers(sdk: tuple[str, Any], daemon: Daemon) -> None:
    kind, client = sdk
    pay = f"{kind}-p::charge"
    client.register_function(pay, charge)
    handle = client.observe({"function_id": pay}, f"{kind}-p::alert",
                            {"id": f"{kind}-pending"})
    with pytest.raises(TimeoutError):
        handle.ready(0.3)
    assert handle.state == "pending"
    assert daemon.observer(f"{kind}-pending")["state"] == "pending"  # type: ignore[index]
    seen = Seen()
    client.register_function(f"{kind}-p::alert", seen.handler)
    handle.ready(5)
    call(client, pay, {"amount": 1})
    assert seen.wait(1)[0]["output"] == {"ok": True, "amount": 1}
    handle.dispose()


@pytest.mark.parametrize(("source", "target", "code"), [
    ({"filters": {"input.amount": 500}}, "t", "INVALID_FILTER"),
    ({"filters": {"body.amount": {"$gt": 1}}}, "t", "INVALID_FILTER"),
    ({"on": "sometimes"}, "t", "INVALID_ARGS"),
    ({}, "engine::status", "FORBIDDEN"),
])
def test_refusals_make_ready_raise(sdk: tuple[str, Any], source: dict[str, Any],
                                   target: str, code: str) -> None:
    _, client = sdk
    handle = client.observe({"function_id": "x::y", **source}, target)
    with pytest.raises(rejection()) as raised:
        handle.ready(5)
    assert raised.value.code == code  # type: ignore[attr-defined]
    assert handle.state == "error"


def test_max_fires_and_dispose(sdk: tuple[str, Any], daemon: Daemon) -> None:
    kind, client = sdk
    pay = f"{kind}-m::charge"
    seen, other = Seen(), Seen()
    client.register_function(pay, charge)
    client.register_function(f"{kind}-m::alert", seen.handler)
    client.register_function(f"{kind}-m::other", other.handler)
    twice = client.observe({"function_id": pay}, f"{kind}-m::alert", {"max_fires": 2})
    kept = client.observe({"function_id": pay}, f"{kind}-m::other",
                          {"id": f"{kind}-kept"})
    twice.ready(5)
    kept.ready(5)
    for amount in (1, 2, 3):
        call(client, pay, {"amount": amount})
    other.wait(3)
    wait_for(lambda: twice.state == "disposed", message="disposed after max_fires")
    assert [e["input"]["amount"] for e in seen.items] == [1, 2]
    assert twice.reason["code"] == "MAX_FIRES"  # type: ignore[index]
    row = daemon.observer(f"{kind}-kept")
    assert row is not None and row["fires"] == 3 and row["state"] == "active"
    kept.dispose()
    wait_for(lambda: daemon.observer(f"{kind}-kept") is None, message="unobserved")
    call(client, pay, {"amount": 4})
    assert len(other.items) == 3


def test_expires_in_ms(sdk: tuple[str, Any]) -> None:
    kind, client = sdk
    pay = f"{kind}-x::charge"
    seen = Seen()
    client.register_function(pay, charge)
    client.register_function(f"{kind}-x::alert", seen.handler)
    handle = client.observe({"function_id": pay}, f"{kind}-x::alert",
                            {"expires_in_ms": 400})
    handle.ready(5)
    call(client, pay, {"amount": 1})
    seen.wait(1)
    wait_for(lambda: handle.state == "disposed", message="expired")
    assert handle.reason["code"] == "EXPIRED"  # type: ignore[index]
    call(client, pay, {"amount": 2})
    assert len(seen.items) == 1


def test_the_loop_guard_stops_an_observer_that_calls_its_own_source(
        sdk: tuple[str, Any], daemon: Daemon) -> None:
    kind, client = sdk
    pay = f"{kind}-l::charge"
    seen = Seen()
    client.register_function(pay, charge)

    def again(envelope: dict[str, Any]) -> None:
        seen.handler(envelope)
        client.trigger({"function_id": pay, "payload": envelope["input"]})

    client.register_function(f"{kind}-l::again", again)
    handle = client.observe({"function_id": pay}, f"{kind}-l::again",
                            {"id": f"{kind}-loop"})
    handle.ready(5)
    call(client, pay, {"amount": 1})
    wait_for(lambda: (daemon.observer(f"{kind}-loop") or {}).get("dropped", {}).get(
        "LOOP_GUARD") == 1, message="the loop guard")
    assert len(seen.items) == 8  # MAX_OBSERVE_DEPTH hops, then it stops
    handle.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_observers_are_replayed_after_the_daemon_restarts(kind: str,
                                                          short_tmp: Path) -> None:
    daemon = Daemon(short_tmp)
    client = daemon.client(kind)
    try:
        seen = Seen()
        client.register_function("r::charge", charge)
        client.register_function("r::alert", seen.handler)
        handle = client.observe({"function_id": "r::charge"}, "r::alert", {"id": "again"})
        handle.ready(5)
        daemon.process.stop()
        daemon.process = ThreadDaemon(short_tmp, "--ws-port", str(daemon.ws_port)).start()
        wait_for(lambda: (daemon.observer("again") or {}).get("state") == "active",
                 timeout=15, message="the observer replayed")
        call(client, "r::charge", {"amount": 5})
        assert seen.wait(1)[0]["input"] == {"amount": 5}
    finally:
        client.shutdown()
        daemon.process.stop()


def test_the_official_example_runs_unchanged_beside_register_trigger(
        short_tmp: Path) -> None:
    """The ``III.observe`` docstring's alert on large failed charges, against
    ``iii daemon start``, with a legacy ``register_trigger`` working beside it."""
    port = free_port()
    env = {**child_env(short_tmp), "III_WS_PORT": str(port)}
    assert run_iii(short_tmp, "daemon", "start", env=env).returncode == 0
    worker = official_worker(port, "payments")
    try:
        alerts, ticks = Seen(), Seen()
        worker.register_function("payments::charge", charge)
        notify: Callable[[Any], None] = alerts.handler
        worker.register_function("alerts::payment-failed", notify)
        failures = worker.observe(
            {"function_id": "payments::charge", "on": "error",
             "filters": {"input.amount": {"$gte": 500}}},
            "alerts::payment-failed",
            {"max_in_flight": 4},
        )
        failures.ready()
        worker.register_function("orders::tick", ticks.handler)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            worker.register_trigger({"type": "subscribe", "function_id": "orders::tick",
                                     "config": {"topic": "orders"}})
        for amount in (20, 600, 900, 499):
            call(worker, "payments::charge", {"amount": amount})
        wait_for(lambda: run_iii(short_tmp, "list", "triggers", "-o", "json",
                                 env=env).stdout.count("orders::tick") == 1)
        worker.trigger({"function_id": "publish",
                        "payload": {"topic": "orders", "data": {"n": 1}}})
        assert sorted(e["input"]["amount"] for e in alerts.wait(2)) == [600, 900]
        assert ticks.wait(1) == [{"n": 1}]
        listed = run_iii(short_tmp, "list", "observers", env=env)
        assert listed.returncode == 0 and "payments::charge" in listed.stdout
        assert "alerts::payment-failed" in listed.stdout and "active" in listed.stdout
        failures.dispose()
    finally:
        worker.shutdown()
        run_iii(short_tmp, "daemon", "stop", env=env)


def test_a_handler_knows_who_called_it(sdk: tuple[str, Any], daemon: Daemon) -> None:
    """``current_invocation().caller``: the calling worker (stamped by the daemon) and
    the function and invocation it called from (asserted by its SDK)."""
    kind, client = sdk
    current = iii.current_invocation if kind == "official" else iii_sdk.current_invocation
    client.register_function(f"{kind}-who::callee",
                             lambda data: dict(current().caller or {}))
    wait_served(daemon.process, f"{kind}-who::callee")
    caller_side = daemon.client("ours")
    try:
        caller_side.register_function(f"{kind}-who::caller", lambda data: caller_side.trigger(
            {"function_id": f"{kind}-who::callee", "payload": None}))
        caller_side.ping()
        seen = caller_side.trigger({"function_id": f"{kind}-who::caller", "payload": None})
    finally:
        caller_side.shutdown()
    assert seen["worker_name"] == "ours" and seen["worker_id"]
    assert seen["function_id"] == f"{kind}-who::caller" and seen["invocation_id"]


# --- the owner side: owner delivery and local dispatch (the official SDK on both ends) ---


TICKS_ARGS = {"type": "object", "required": ["symbol"],
              "properties": {"symbol": {"type": "string"}}}


class Owner:
    """An official-SDK worker that serves ``feed::ticks``, delivered by its owner: its
    hooks keep each observer (by its args' symbol) and see it go."""

    def __init__(self, daemon: Daemon, prefix: str) -> None:
        self.worker = daemon.client("official")
        self.function_id = f"{prefix}feed::ticks"
        self.added: dict[str, Any] = {}
        self.removed: list[str] = []

        def added(observer: Any) -> None:
            if observer.args["symbol"] == "EVIL":
                raise iii.ObserveRejection("NO_SUCH_SYMBOL", "EVIL is not listed")
            self.added[observer.args["symbol"]] = observer

        def removed(observer: Any) -> None:
            self.removed.append(observer.args["symbol"])

        self.worker.register_function(self.function_id, lambda data: None, observe=iii.ObserveHooks(
            delivery="owner", args_format=TICKS_ARGS, on_observer_added=added,
            on_observer_removed=removed))


def test_owner_delivery_takes_args_and_the_owner_emits_and_calls(daemon: Daemon) -> None:
    owner = Owner(daemon, "od-")
    watcher = daemon.client("official")
    seen = Seen()

    def on_tick(data: Any, metadata: Any = None) -> Any:
        seen.handler(data, metadata)
        return {"took": data}

    try:
        watcher.register_function("od-app::on_tick", on_tick)
        handle = watcher.observe({"function_id": owner.function_id,
                                  "args": {"symbol": "ACME"}}, "od-app::on_tick",
                                 {"id": "od-acme", "metadata": {"desk": 7}})
        handle.ready(5)  # active once the owner's hook took it
        acme = wait_for(lambda: owner.added.get("ACME"), message="the owner's hook")
        assert acme.target == "od-app::on_tick"

        # Events the owner emits reach the target as envelopes; nothing else does.
        assert acme.emit({"price": 10}) is True
        [envelope] = seen.wait(1)
        assert {k: envelope[k] for k in ("observer_id", "function_id", "status",
                                          "namespace", "input")} == {
            "observer_id": "od-acme", "function_id": owner.function_id,
            "status": "success", "namespace": "default", "input": {"price": 10}}
        assert seen.metadata[0] == {"desk": 7}
        owner.worker.trigger({"function_id": owner.function_id, "payload": {"x": 1}})
        # obs.call: the target gets the payload itself, and its answer comes back.
        assert acme.call({"price": 11}) == {"took": {"price": 11}}
        assert seen.wait(2)[1] == {"price": 11}
        row = daemon.observer("od-acme")
        assert row is not None and row["fires"] == 2 and row["state"] == "active"

        # args are checked against args_format; the owner's hook may refuse.
        for args, code in (({"symbol": 5}, "INVALID_ARGS"), ({}, None),
                           ({"symbol": "EVIL"}, "NO_SUCH_SYMBOL")):
            refused = watcher.observe({"function_id": owner.function_id, "args": args},
                                      "od-app::on_tick")
            with pytest.raises(iii.ObserveRejection) as raised:
                refused.ready(5)
            assert code is None or raised.value.code == code, raised.value
        # A function the daemon delivers (auto) takes no args.
        owner.worker.register_function("od-feed::plain", lambda data: None)
        wait_served(daemon.process, "od-feed::plain")
        auto = watcher.observe({"function_id": "od-feed::plain", "args": {"symbol": "A"}},
                               "od-app::on_tick")
        with pytest.raises(iii.ObserveRejection) as raised:
            auto.ready(5)
        assert raised.value.code == "INVALID_ARGS"
        handle.dispose()
        wait_for(lambda: owner.removed == ["ACME"], message="the owner's removal hook")
        with pytest.raises(iii.InvocationError) as stopped:
            acme.call({"price": 12})
        assert stopped.value.code == "OBSERVER_NOT_ACTIVE"
        assert len(seen.items) == 2
    finally:
        watcher.shutdown()
        owner.worker.shutdown()


def test_an_owner_that_leaves_takes_its_observers_back_to_pending(daemon: Daemon) -> None:
    owner = Owner(daemon, "ol-")
    watcher = daemon.client("official")
    try:
        watcher.register_function("ol-app::on_tick", lambda data: None)
        handle = watcher.observe({"function_id": owner.function_id,
                                  "args": {"symbol": "ACME"}}, "ol-app::on_tick",
                                 {"id": "ol-acme"})
        handle.ready(5)
        owner.worker.shutdown()
        wait_for(lambda: (daemon.observer("ol-acme") or {}).get("state") == "pending",
                 message="pending without its owner")
        again = Owner(daemon, "ol-")  # a new owner takes it in, and it is active again
        wait_for(lambda: again.added.get("ACME"), message="the new owner's hook")
        wait_for(lambda: (daemon.observer("ol-acme") or {}).get("state") == "active",
                 message="active with its new owner")
        again.worker.shutdown()
    finally:
        watcher.shutdown()


def test_local_dispatch_runs_in_process_and_still_reports_to_observers(
        daemon: Daemon) -> None:
    """A worker calls its own function without a round trip (``functionregistered
    {local_dispatch: true}``); the daemon never sees that call, yet its observer fires
    from the worker's report."""
    worker = daemon.client("official")
    watcher = daemon.client("official")
    seen = Seen()

    def twice(data: dict[str, Any]) -> Any:
        return worker.trigger({"function_id": "ld-math::add",
                               "payload": {"a": data["n"], "b": data["n"]}})

    try:
        worker.register_function("ld-math::add", lambda d: {"sum": d["a"] + d["b"]})
        worker.register_function("ld-math::twice", twice)
        watcher.register_function("ld-app::audit", seen.handler)
        handle = watcher.observe({"function_id": "ld-math::add"}, "ld-app::audit",
                                 {"id": "ld-audit"})
        handle.ready(5)
        with iii_sdk.connect(str(daemon.process.socket_path)) as client:
            assert client.trigger({"function_id": "ld-math::twice",
                                   "payload": {"n": 4}}) == {"sum": 8}
            [envelope] = seen.wait(1)
            assert (envelope["input"], envelope["output"], envelope["source"]) == \
                ({"a": 4, "b": 4}, {"sum": 8}, "local")
            assert envelope["caller"]["function_id"] == "ld-math::twice"
            finished = client.trigger({"function_id": "engine::events::list", "payload": {
                "event": "invocation.finished", "limit": 10_000}})["events"]
            called = [e["function_id"] for e in finished]
            assert "ld-math::twice" in called and "ld-math::add" not in called
    finally:
        watcher.shutdown()
        worker.shutdown()
