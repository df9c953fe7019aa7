"""Observers (observe.v1) in the core, without sockets: states, matching, activations,
their bounds and the loop guard."""

from __future__ import annotations

from typing import Any

import pytest

from iii_daemon.core.observers import MAX_OBSERVE_DEPTH
from tests.unit.test_router import Core

WORKER, CALLER, OBSERVER = 1, 2, 3


@pytest.fixture
def core() -> Core:
    c = Core()
    c.connect(WORKER, CALLER, OBSERVER)
    c.register(WORKER, "pay")
    return c


def observe(core: Core, observer_id: str = "o1", function: str = "pay",
            target: str = "alert", conn: int = OBSERVER,
            source: dict[str, Any] | None = None, **fields: Any) -> list[tuple[int, Any]]:
    """``observe`` of ``function`` from ``conn``; ``source`` adds to its source."""
    return core.send(conn, {"type": "observe", "id": observer_id,
                            "source": {"function_id": function, **(source or {})},
                            "target": {"function_id": target}, **fields})


def of_type(out: list[tuple[int, Any]], kind: str) -> list[tuple[int, dict[str, Any]]]:
    return [(c, m) for c, m in out if isinstance(m, dict) and m["type"] == kind]


def finish(core: Core, data: Any, result: Any = None, error: Any = None,
           **fields: Any) -> list[tuple[int, Any]]:
    """A call of ``pay`` from CALLER, answered by WORKER; what followed the answer."""
    sent = core.call(CALLER, "pay", data, invocation_id="c1", **fields)
    invocation_id = sent[0][1]["invocation_id"]
    answer = {"type": "invocationresult", "invocation_id": invocation_id,
              "function_id": "pay"}
    answer.update({"error": error} if error is not None else {"result": result})
    return core.send(WORKER, answer)


def activations(out: list[tuple[int, Any]], conn: int = OBSERVER) -> list[dict[str, Any]]:
    return [m for c, m in of_type(out, "invokefunction") if c == conn]


def test_pending_until_the_target_is_served_then_active(core: Core) -> None:
    assert of_type(observe(core), "observeresult") == [
        (OBSERVER, {"type": "observeresult", "id": "o1", "state": "pending"})]
    assert activations(finish(core, {"amount": 900})) == []  # nobody to call yet
    out = core.register(OBSERVER, "alert")
    assert of_type(out, "observerstatechanged") == [
        (OBSERVER, {"type": "observerstatechanged", "id": "o1", "state": "active"})]
    [activation] = activations(finish(core, {"amount": 900}, {"ok": True}))
    envelope = activation["data"]
    assert activation["activation"] == {"observer_id": "o1",
                                        "activation_id": envelope["activation_id"]}
    assert activation["observe_depth"] == 1
    assert envelope["input"] == {"amount": 900} and envelope["output"] == {"ok": True}
    assert envelope["caller"]["worker_id"] == core.hello[CALLER]["worker_id"]
    assert envelope["status"] == "success" and envelope["source"] == "cli"
    # The target leaves: suspended, and active again when it comes back.
    out = core.send(OBSERVER, {"type": "unregisterfunction", "id": "alert"})
    assert [m["state"] for _, m in of_type(out, "observerstatechanged")] == ["suspended"]
    out = core.register(OBSERVER, "alert")
    assert [m["state"] for _, m in of_type(out, "observerstatechanged")] == ["active"]


def test_on_filters_capture_deliver_and_metadata(core: Core) -> None:
    core.register(OBSERVER, "alert")
    observe(core, source={"on": "error", "filters": {"input.amount": {"$gte": 500}},
                          "capture": ["input", "error"]}, metadata={"team": "pay"})
    assert activations(finish(core, {"amount": 900}, {"ok": True})) == []  # a success
    assert activations(finish(core, {"amount": 10}, error={"code": "declined",
                                                           "message": "no"})) == []
    [activation] = activations(finish(core, {"amount": 900},
                                      error={"code": "declined", "message": "no"}))
    envelope = activation["data"]
    assert envelope["error"] == {"code": "declined", "message": "no"}
    assert (envelope["function_id"], envelope["namespace"], envelope["status"]) == (
        "pay", "default", "error")
    assert "output" not in envelope and "caller" not in envelope
    assert activation["metadata"] == {"team": "pay"}
    observe(core, "o2", source={"deliver": "input", "filters": {
        "caller.worker_id": {"$eq": core.hello[CALLER]["worker_id"]}}})
    [activation] = activations(finish(core, {"amount": 3}, {"ok": True}))
    assert activation["data"] == {"amount": 3}
    observe(core, "o3", source={"on": "complete",
                                "filters": {"output.ok": {"$eq": False}}})
    assert [a["activation"]["observer_id"] for a in activations(
        finish(core, {"amount": 4}, {"ok": False}))] == ["o2", "o3"]


@pytest.mark.parametrize(("fields", "code"), [
    ({"source": {"filters": {"input.amount": 500}}}, "INVALID_FILTER"),
    ({"source": {"on": "sometimes"}}, "INVALID_ARGS"),
    ({"source": {"capture": ["input", "body"]}}, "INVALID_ARGS"),
    ({"source": {"args": {"expression": "* * * * *"}}}, "INVALID_ARGS"),
    ({"max_fires": 0}, "INVALID_ARGS"),
    ({"max_in_flight": "many"}, "INVALID_ARGS"),
    ({"target": "engine::status"}, "FORBIDDEN"),
    ({"target": "pay"}, "SELF_TARGET"),  # each call of it would call it again
])
def test_refusals_answer_error_and_keep_nothing(core: Core, fields: dict[str, Any],
                                                code: str) -> None:
    target = fields.pop("target", "alert")
    [(_, result)] = of_type(observe(core, target=target, **fields), "observeresult")
    assert result["state"] == "error" and result["error"]["code"] == code
    assert core.router.observers.by_id == {}


def test_a_replay_is_idempotent_and_another_connections_id_is_forbidden(core: Core) -> None:
    core.register(OBSERVER, "alert")
    observe(core)
    finish(core, {"amount": 1}, {})
    [(_, again)] = of_type(observe(core), "observeresult")
    assert again == {"type": "observeresult", "id": "o1", "state": "active"}
    [(_, changed)] = of_type(observe(core, target="other"), "observeresult")
    assert changed["warnings"]  # the first definition stays
    assert core.router.observers.by_id["o1"].fires == 1
    [(_, taken)] = of_type(observe(core, conn=CALLER), "observeresult")
    assert taken["state"] == "error" and taken["error"]["code"] == "FORBIDDEN"


def test_max_fires_and_unobserve_dispose(core: Core) -> None:
    core.register(OBSERVER, "alert")
    observe(core, max_fires=2)
    assert len(activations(finish(core, {}, {}))) == 1
    out = finish(core, {}, {})
    assert len(activations(out)) == 1
    [(_, disposed)] = of_type(out, "observerstatechanged")
    assert disposed["state"] == "disposed" and disposed["fires"] == 2
    assert disposed["reason"]["code"] == "MAX_FIRES"
    assert activations(finish(core, {}, {})) == []
    observe(core, "o2")
    out = core.send(OBSERVER, {"type": "unobserve", "id": "o2"})
    assert of_type(out, "observerstatechanged")[0][1]["reason"]["code"] == "UNOBSERVED"
    assert activations(finish(core, {}, {})) == []


def test_expires_in_ms(core: Core) -> None:
    core.register(OBSERVER, "alert")
    observe(core, expires_in_ms=1500)
    assert core.router.next_deadline() is not None
    assert of_type(core.advance(1.0), "observerstatechanged") == []
    [(_, expired)] = of_type(core.advance(0.6), "observerstatechanged")
    assert expired["state"] == "disposed" and expired["reason"]["code"] == "EXPIRED"


def test_max_in_flight_holds_the_rest_until_activations_end(core: Core) -> None:
    core.register(OBSERVER, "alert")
    observe(core, max_in_flight=2)
    started = [a for _ in range(5) for a in activations(finish(core, {}, {}))]
    assert len(started) == 2
    assert core.router.observers.by_id["o1"].row()["backlog"] == 3
    out = core.send(OBSERVER, {"type": "invocationresult",
                               "invocation_id": started[0]["invocation_id"], "result": 1})
    assert len(activations(out)) == 1  # one ended, one more starts


def test_the_loop_guard_stops_a_chain_at_the_depth_limit(core: Core) -> None:
    core.register(OBSERVER, "alert")
    observe(core)
    sent = core.call(CALLER, "pay", {}, invocation_id="c1",
                     observe_depth=MAX_OBSERVE_DEPTH - 1)
    assert sent[0][1]["observe_depth"] == MAX_OBSERVE_DEPTH - 1  # travels on
    out = core.send(WORKER, {"type": "invocationresult",
                             "invocation_id": sent[0][1]["invocation_id"], "result": 1})
    assert activations(out)[0]["observe_depth"] == MAX_OBSERVE_DEPTH
    assert activations(finish(core, {}, {}, observe_depth=MAX_OBSERVE_DEPTH)) == []
    assert core.router.observers.by_id["o1"].looped == 1
    assert [e for e in core.router.events if e["event"] == "observer.skipped"]


def test_observers_go_with_their_connection_and_survive_a_reattach(core: Core) -> None:
    core.register(OBSERVER, "alert")
    observe(core)
    core.connect(4)
    core.send(4, {"type": "reattach", "previous_worker_id": core.hello[OBSERVER]["worker_id"],
                  "reattach_token": core.hello[OBSERVER]["reattach_token"]})
    observer = core.router.observers.by_id["o1"]
    assert observer.owner == 4 and observer.state == "suspended"  # its target left
    core.register(4, "alert")
    assert len(activations(finish(core, {}, {}), conn=4)) == 1
    core.disconnect(4)
    assert core.router.observers.by_id == {}


def test_calls_of_unobserved_functions_keep_nothing_for_observers(core: Core) -> None:
    core.register(OBSERVER, "alert")
    core.register(WORKER, "other")
    observe(core)
    core.call(CALLER, "other", {}, invocation_id="c9")
    [inv] = [i for i in core.router.invocations._pending.values()]
    assert inv.observed is None


def test_daemon_functions_can_be_observed(core: Core) -> None:
    core.register(OBSERVER, "alert")
    observe(core, function="state::set",
            source={"filters": {"input.scope": {"$eq": "orders"}}})
    out = core.call(CALLER, "state::set", {"scope": "orders", "key": "k", "value": 1},
                    invocation_id="s1")
    [activation] = activations(out)
    assert activation["data"]["output"]["new_value"] == 1


def test_what_an_observer_holds_is_bounded(core: Core) -> None:
    [(_, big)] = of_type(observe(core, metadata={"blob": "x" * 70_000}), "observeresult")
    assert big["state"] == "error" and big["error"]["code"] == "INVALID_ARGS"
    core.register(OBSERVER, "alert")
    observe(core, max_in_flight=1)
    large = {"blob": "y" * (4 * 1024 * 1024)}  # 4 MiB each: 16 MiB of backlog at most
    for _ in range(7):
        finish(core, large, {})
    row = core.router.observers.by_id["o1"].row()
    assert row["in_flight"] == 1 and row["backlog"] == 3
    assert row["dropped"] == {"BACKLOG_FULL": 3, "LOOP_GUARD": 0}  # by reason
    # engine::observers::get answers the same row; an unknown id is observer_not_found.
    [(_, got)] = core.call(CALLER, "engine::observers::get", {"observer_id": "o1"},
                           invocation_id="g1")
    assert got["result"]["dropped"] == row["dropped"] and got["result"]["id"] == "o1"
    [(_, missing)] = core.call(CALLER, "engine::observers::get", {"observer_id": "nope"},
                               invocation_id="g2")
    assert missing["error"]["code"] == "observer_not_found"


def test_a_trigger_fired_by_a_write_carries_the_writers_observe_depth(core: Core) -> None:
    """An activation's handler writes state; the state trigger it fires calls ``pay``
    with the same observe_depth, so an observer loop through state meets the guard."""
    core.send(WORKER, {"type": "registertrigger", "id": "on-s", "trigger_type": "state",
                       "function_id": "pay", "config": {"scope": "s"}})
    for depth, via in ((3, "state::set"), (0, "state::set"), (2, "publish")):
        if via == "publish":
            core.send(WORKER, {"type": "registertrigger", "id": "on-t",
                               "trigger_type": "subscribe", "function_id": "pay",
                               "config": {"topic": "t"}})
            data: dict[str, Any] = {"topic": "t", "data": 1}
        else:
            data = {"scope": "s", "key": "k", "value": depth}
        out = core.call(CALLER, via, data, invocation_id=f"w{depth}",
                        **({"observe_depth": depth} if depth else {}))
        out += core.land()
        [fired] = [m for c, m in out if c == WORKER and m.get("type") == "invokefunction"]
        assert fired["function_id"] == "pay" and fired.get("observe_depth") == (depth or None)
        core.send(WORKER, {"type": "invocationresult",
                           "invocation_id": fired["invocation_id"], "result": None})
