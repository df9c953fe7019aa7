"""The owner side of observe.v1 in the core (core/observer_owners.py), as the official
SDK 0.25 speaks it: functionregistered with the observers and local dispatch, observers
added and removed with revisions, acks, owner delivery (obs.emit reported, obs.call
routed), calls run in-process reported, and their counts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_observers import activations, observe, of_type
from tests.unit.test_router import Core

OWNER, CALLER, OBSERVER = 1, 2, 3
SCHEMA = {"type": "object", "required": ["symbol"],
          "properties": {"symbol": {"type": "string"}}}


def declare(core: Core, conn: int, features: list[str]) -> list[tuple[int, Any]]:
    return core.call(conn, "engine::workers::register", {"name": "w", "features": features},
                     action={"type": "void"})


@pytest.fixture
def core() -> Core:
    c = Core()
    c.connect(OWNER, CALLER, OBSERVER)
    c.register(OBSERVER, "alert")
    return c


def register_ticks(core: Core) -> list[tuple[int, Any]]:
    return core.send(OWNER, {"type": "registerfunction", "id": "ticks", "observe": {
        "delivery": "owner", "args_format": SCHEMA}})


def ack(core: Core, observer_id: str, revision: int, error: Any = None,
        function: str = "ticks") -> list[tuple[int, Any]]:
    message = {"type": "observerack", "function_id": function, "id": observer_id,
               "revision": revision}
    if error is not None:
        message["error"] = error
    return core.send(OWNER, message)


def test_functions_are_confirmed_once_the_worker_declares_observe(core: Core) -> None:
    register_ticks(core)
    core.register(OWNER, "plain")  # before engine::workers::register, as the SDK does
    assert of_type(observe(core, "o1", "ticks", source={"args": {"symbol": "A"}}),
                   "observeresult")[0][1]["state"] == "pending"
    out = declare(core, OWNER, ["observe.v1", "local-dispatch.v1"])
    confirmed = {m["id"]: m for _, m in of_type(out, "functionregistered")}
    assert confirmed["plain"] == {"type": "functionregistered", "id": "plain",
                                  "namespace": "default", "revision": 1,
                                  "local_dispatch": True}
    assert confirmed["ticks"]["observers"] == [
        {"id": "o1", "args": {"symbol": "A"}, "filters": {}, "target": "alert",
         "capture": ["input", "output", "caller"], "on": "success"}]
    # A worker that declares nothing hears none of it.
    assert of_type(core.register(CALLER, "other"), "functionregistered") == []
    # Registered afterwards: confirmed at once; no local dispatch without the feature.
    declare(core, CALLER, ["observe.v1"])
    [(_, late)] = of_type(core.register(CALLER, "later"), "functionregistered")
    assert "local_dispatch" not in late


def test_an_owner_delivered_observer_is_active_once_acked_and_may_be_refused(
        core: Core) -> None:
    register_ticks(core)
    declare(core, OWNER, ["observe.v1"])
    out = observe(core, "o1", "ticks", source={"args": {"symbol": "A"}})
    assert of_type(out, "observeresult")[0][1]["state"] == "pending"
    [(to, added)] = of_type(out, "observeradded")
    assert to == OWNER and added["revision"] == 2 and added["observer"]["args"] == \
        {"symbol": "A"}
    out = ack(core, "o1", 2)
    assert of_type(out, "observerstatechanged")[0][1]["state"] == "active"
    assert ack(core, "o1", 2, function="nope") == []  # not what it observes: ignored
    # A routed call of an owner-delivered function activates nothing by itself.
    sent = core.call(CALLER, "ticks", {"x": 1}, invocation_id="c")
    done = core.send(OWNER, {"type": "invocationresult",
                             "invocation_id": sent[0][1]["invocation_id"],
                             "function_id": "ticks", "result": 1})
    assert activations(done) == []
    # The owner's hook refuses another: error, with its code; the owner hears it go.
    observe(core, "o2", "ticks", source={"args": {"symbol": "B"}})
    out = ack(core, "o2", 3, {"code": "NO_SUCH_SYMBOL", "message": "B is not listed"})
    [(_, changed)] = of_type(out, "observerstatechanged")
    assert (changed["state"], changed["reason"]["code"]) == ("error", "NO_SUCH_SYMBOL")
    assert [m["id"] for _, m in of_type(out, "observerremoved")] == ["o2"]


@pytest.mark.parametrize("args, code", [({"symbol": 5}, "INVALID_ARGS"),
                                        ({}, "INVALID_ARGS"), ("x", "INVALID_ARGS")])
def test_args_must_fit_the_args_format(core: Core, args: Any, code: str) -> None:
    register_ticks(core)
    [(_, answer)] = of_type(observe(core, "o", "ticks", source={"args": args}),
                            "observeresult")
    assert answer["state"] == "error" and answer["error"]["code"] == code


def test_args_on_an_auto_function_and_bad_descriptors_are_refused(core: Core) -> None:
    core.register(OWNER, "auto")
    [(_, answer)] = of_type(observe(core, "o", "auto", source={"args": {"a": 1}}),
                            "observeresult")
    assert answer["error"]["code"] == "INVALID_ARGS"
    core.send(OWNER, {"type": "registerfunction", "id": "closed",
                      "observe": {"allow": False}})
    [(_, closed)] = of_type(observe(core, "o2", "closed"), "observeresult")
    assert closed["error"]["code"] == "NOT_OBSERVABLE"
    for bad in ({"delivery": "sometimes"}, {"args_format": SCHEMA},
                {"delivery": "owner", "args_format": {"type": 5}}, "owner"):
        [(_, refused)] = of_type(core.send(OWNER, {"type": "registerfunction", "id": "bad",
                                                   "observe": bad}), "error")
        assert refused["request_id"] == "bad"
    assert "bad" not in core.router.registry.functions


def test_emitted_events_and_local_calls_activate_what_they_matched(core: Core) -> None:
    register_ticks(core)
    core.register(OWNER, "add")
    declare(core, OWNER, ["observe.v1", "local-dispatch.v1"])
    observe(core, "o1", "ticks", source={"args": {"symbol": "A"}})
    observe(core, "o2", "add")
    ack(core, "o1", 2)
    ack(core, "o2", 2, function="add")
    out = core.send(OWNER, {"type": "invocationsobserved", "items": [
        {"function_id": "ticks", "invocation_id": "e1", "matched": ["o1"],
         "status": "success", "input": {"price": 10}, "started_at_ms": 1000,
         "duration_ms": 0.0, "observe_depth": 0},
        {"function_id": "add", "invocation_id": "l1", "matched": ["o2", "o1", "nope"],
         "status": "success", "input": {"a": 1}, "output": 2, "started_at_ms": 1000,
         "duration_ms": 1.5, "observe_depth": 3}]})
    first, second = activations(out)
    assert (first["data"]["input"], first["activation"]["observer_id"]) == ({"price": 10}, "o1")
    assert (second["data"]["output"], second["data"]["source"], second["observe_depth"]) == \
        (2, "local", 4)  # o1 does not observe add: only o2 fired
    # Another worker cannot report for functions it does not serve.
    assert activations(core.send(CALLER, {"type": "invocationsobserved", "items": [
        {"function_id": "add", "invocation_id": "x", "matched": ["o2"]}]})) == []


def test_an_owner_call_goes_to_the_observers_target_only_from_its_owner(
        core: Core) -> None:
    register_ticks(core)
    declare(core, OWNER, ["observe.v1"])
    observe(core, "o1", "ticks", source={"args": {"symbol": "A"}},
            metadata={"desk": 7}, max_fires=2)
    ack(core, "o1", 2)

    def owner_call(conn: int, n: int) -> list[tuple[int, Any]]:
        return core.send(conn, {"type": "invokefunction", "function_id": "alert",
                                "invocation_id": f"k{n}", "data": {"price": n},
                                "activation": {"observer_id": "o1"}})

    [call] = activations(owner_call(OWNER, 1))
    assert (call["data"], call["metadata"], call["observe_depth"]) == ({"price": 1},
                                                                       {"desk": 7}, 1)
    assert call["activation"] == {"observer_id": "o1", "activation_id": "o1:1"}
    [(_, forbidden)] = of_type(owner_call(CALLER, 2), "invocationresult")
    assert forbidden["error"]["code"] == "FORBIDDEN"
    out = owner_call(OWNER, 3)  # the second fire: max_fires disposes it after routing
    assert len(activations(out)) == 1
    assert of_type(out, "observerstatechanged")[-1][1]["state"] == "disposed"
    [(_, gone)] = of_type(owner_call(OWNER, 4), "invocationresult")
    assert gone["error"]["code"] == "FORBIDDEN"  # no such observer any more


def test_local_invocation_counts_join_the_functions_stats(core: Core) -> None:
    core.register(OWNER, "add")
    core.send(OWNER, {"type": "localinvocationstats", "window_ms": 10_000, "functions": [
        {"function_id": "add", "count": 5, "errors": 1, "duration_ms_sum": 10.0},
        {"function_id": "not-mine", "count": 9},
        {"function_id": "add", "count": 10**12, "errors": 10**13}]})
    stats = core.router.stats.functions["add"]
    assert (stats.calls, stats.errors) == (5, 1)
    assert "not-mine" not in core.router.stats.functions
