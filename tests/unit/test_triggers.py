"""Triggers in the router core, without sockets: protocol.md § Triggers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_router import Core, result

WALL = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a whole minute


@pytest.fixture
def core() -> Core:
    c = Core()
    c.router.start(c.now, WALL)
    c.connect(1)  # worker serving functions
    c.connect(2)  # caller / registrant
    for function_id in ("job", "gate"):
        c.register(1, function_id)
    return c


def reg(core: Core, conn: int = 2, **request: Any) -> dict[str, Any]:
    out = core.call(conn, "engine::register_trigger", request, invocation_id="r")
    [answer] = [m for c, m in out if c == conn and m["type"] == "invocationresult"]
    return answer  # type: ignore[no-any-return]


def invocations(out: list[tuple[int, Any]]) -> list[dict[str, Any]]:
    return [m for c, m in out if c == 1 and m["type"] == "invokefunction"]


def events(core: Core, kind: str) -> list[dict[str, Any]]:
    return [e for e in core.router.events if e["event"] == kind]


# --- cron -------------------------------------------------------------------------------


@pytest.mark.parametrize("expression", ["*/5 * * * * *", "0 0 12 * * * 2030", "*/15 * * * *"])
def test_cron_accepts_6_7_and_5_fields(core: Core, expression: str) -> None:
    answer = reg(core, type="cron", function_id="job", config={"expression": expression})
    assert answer["result"]["status"] == "active"


@pytest.mark.parametrize("config, fragment", [
    ({"expression": "61 * * * * *"}, "the second field '61' is not valid (0-59)"),
    ({"expression": "0 0 0 1 13 *"}, "the month field '13' is not valid"),
    ({"expression": "* * * * 61"}, "the day of week field '61' is not valid (0-6 or sun-sat)"),
    ({"expression": "* *"}, "it has 2 fields; a cron expression has 6"),
    ({}, "config.expression must be a non-empty string"),
    # Read by croniter, but never scheduled: 30 February, 31 April, a past year.
    ({"expression": "0 0 0 30 2 *"}, "'0 0 0 30 2 *' never fires"),
    ({"expression": "0 0 31 4 *"}, "'0 0 31 4 *' never fires"),
    ({"expression": "0 0 0 1 1 * 2020"}, "never fires"),
])
def test_bad_cron_config_is_refused_with_what_is_wrong(core: Core, config: dict[str, Any],
                                                        fragment: str) -> None:
    answer = reg(core, type="cron", function_id="job", config=config)
    assert answer["error"]["code"] == "bad_request"  # a malformed request: CLI exit 2
    assert fragment in answer["error"]["message"]
    assert core.router.triggers.bindings == {}
    assert core.disk.triggers == {} and core.disk.commits == 0  # nothing stored


def test_cron_fires_on_schedule_with_its_payload_and_does_not_bunch(core: Core) -> None:
    reg(core, id="every2", type="cron", function_id="job",
        config={"expression": "*/2 * * * * *"})
    assert core.router.next_deadline() == pytest.approx(core.now + 2.0)
    assert invocations(core.advance(1.9)) == []
    [call] = invocations(core.advance(0.1))
    assert call["function_id"] == "job"
    assert call["data"] == {"trigger": "cron", "job_id": "every2",
                            "scheduled_time": "2027-01-15T08:00:02.000Z",
                            "actual_time": "2027-01-15T08:00:02.000Z"}
    core.send(1, result(call["invocation_id"], result=None))
    # A stall of 9 s: one firing, not four; the next one back on the schedule.
    [late] = invocations(core.advance(9.0))
    assert late["data"]["scheduled_time"] == "2027-01-15T08:00:04.000Z"
    assert late["data"]["actual_time"] == "2027-01-15T08:00:11.000Z"
    assert core.router.next_deadline() == pytest.approx(core.now + 1.0)  # :12


def test_unregistered_cron_stops_firing(core: Core) -> None:
    reg(core, id="c", type="cron", function_id="job", config={"expression": "* * * * * *"})
    [(_, answer)] = core.call(2, "engine::unregister_trigger", {"id": "c"}, invocation_id="u")
    assert answer["result"] == {"removed": True}
    assert invocations(core.advance(5)) == []
    assert core.router.next_deadline() is None


def test_a_cron_bound_anew_under_its_id_fires_once_a_tick(core: Core) -> None:
    """Unbound and bound again within a second: the first binding's pending tick is
    not the new one's (it came up as a second firing of the new binding, skipped as
    ``still_running``)."""
    config = {"expression": "* * * * * *"}
    reg(core, id="c", type="cron", function_id="job", config=config)
    core.call(2, "engine::unregister_trigger", {"id": "c"}, invocation_id="u")
    reg(core, id="c", type="cron", function_id="job", config=config)
    assert len(invocations(core.advance(1.0))) == 1
    assert events(core, "trigger.skipped") == []


def test_many_crons_due_at_once_go_a_share_per_turn_and_all_fire(core: Core) -> None:
    """10 000 crons due in the same second must not hold every caller: a turn fires
    FIRINGS_PER_TURN, the rest stay due (the driver comes back at once)."""
    from iii_daemon.core.triggers.manager import FIRINGS_PER_TURN

    count = FIRINGS_PER_TURN * 2 + 10
    for i in range(count):
        core.send(1, {"type": "registertrigger", "id": f"c{i}", "trigger_type": "cron",
                      "function_id": "job", "config": {"expression": "* * * * * *"}})
    first = invocations(core.advance(1.0))
    assert len(first) == FIRINGS_PER_TURN
    assert core.router.next_deadline() <= core.now  # the rest, still due
    rest = invocations(core.advance(0.0)) + invocations(core.advance(0.0))
    assert len(first) + len(rest) == count
    assert len({m["data"]["job_id"] for m in first + rest}) == count  # each once
    assert {m["data"]["scheduled_time"] for m in first + rest} == {
        "2027-01-15T08:00:01.000Z"}


def test_a_change_that_many_state_triggers_watch_fires_a_share_per_turn(core: Core) -> None:
    """10 000 state triggers on one scope: the change fires a turn's share at once, the
    rest on the next turns (the driver comes back at once), each once; one removed
    meanwhile does not fire."""
    from iii_daemon.core.triggers.manager import FIRINGS_PER_TURN

    count = FIRINGS_PER_TURN * 2 + 10
    for i in range(count):
        core.send(1, {"type": "registertrigger", "id": f"s{i}", "trigger_type": "state",
                      "function_id": "job", "config": {"scope": "big"}})
    out = core.call(2, "state::set", {"scope": "big", "key": "k", "value": 1},
                    invocation_id="set")
    first = invocations(out)
    assert len(first) == FIRINGS_PER_TURN
    assert core.router.next_deadline() <= core.now
    core.send(1, {"type": "unregistertrigger", "id": f"s{count - 1}"})
    rest = invocations(core.advance(0.0)) + invocations(core.advance(0.0))
    assert len(first) + len(rest) == count - 1
    assert core.router.next_deadline() is None or core.router.next_deadline() > core.now


def test_firings_of_changes_in_a_row_keep_the_order_of_the_changes(core: Core) -> None:
    """Each change's firings wait behind the ones of the change before it, whatever the
    turn they fall in."""
    from iii_daemon.core.triggers.manager import FIRINGS_PER_TURN

    count = FIRINGS_PER_TURN + 20
    for i in range(count):
        core.send(1, {"type": "registertrigger", "id": f"s{i}", "trigger_type": "state",
                      "function_id": "job", "config": {"scope": "big"}})
    fired = []
    for value in (1, 2, 3):
        fired += invocations(core.call(2, "state::set", {"scope": "big", "key": "k",
                                                         "value": value},
                                       invocation_id=f"set{value}"))
    while core.router.next_deadline() is not None and core.router.next_deadline() <= core.now:
        fired += invocations(core.advance(0.0))
    values = [m["data"]["new_value"] for m in fired]
    assert values == [1] * count + [2] * count + [3] * count


# --- state ------------------------------------------------------------------------------


def test_state_triggers_fire_on_create_update_delete(core: Core) -> None:
    reg(core, id="any", type="state", function_id="job", config={"scope": "orders"})
    reg(core, id="one", type="state", function_id="gate",
        config={"scope": "orders", "key": "o1"})

    def set_(key: str, value: Any) -> list[dict[str, Any]]:
        return invocations(core.call(2, "state::set", {"scope": "orders", "key": key,
                                                       "value": value}, invocation_id="s"))

    first = set_("o1", {"n": 1})
    assert sorted(c["function_id"] for c in first) == ["gate", "job"]
    assert first[0]["data"] == {"type": "state", "event_type": "state:created",
                                "scope": "orders", "key": "o1", "old_value": None,
                                "new_value": {"n": 1}}
    [other] = set_("o2", 5)  # only the scope-wide trigger matches another key
    assert other["function_id"] == "job"
    updated = set_("o1", {"n": 2})
    assert updated[0]["data"]["event_type"] == "state:updated"
    assert updated[0]["data"]["old_value"] == {"n": 1}
    out = core.call(2, "state::delete", {"scope": "orders", "key": "o1"}, invocation_id="d")
    deleted = invocations(out)
    assert deleted[0]["data"]["event_type"] == "state:deleted"
    assert deleted[0]["data"]["old_value"] == {"n": 2}
    assert deleted[0]["data"]["new_value"] is None
    assert invocations(core.call(2, "state::set", {"scope": "other", "key": "o1",
                                                   "value": 1}, invocation_id="x")) == []


def test_state_functions(core: Core) -> None:
    def call(function_id: str, **data: Any) -> Any:
        [answer] = [m for c, m in core.call(2, function_id, data, invocation_id="q") if c == 2]
        return answer.get("result", answer.get("error"))

    assert call("state::get", scope="s", key="k") is None
    assert call("state::set", scope="s", key="k", value=[1]) == {"old_value": None,
                                                                 "new_value": [1]}
    assert call("state::get", scope="s", key="k") == [1]
    assert call("state::list", scope="s") == [[1]]
    assert call("state::list_groups") == {"groups": ["s"]}
    assert call("state::delete", scope="s", key="k") == {"old_value": [1]}
    assert call("state::delete", scope="s", key="k") == {"old_value": None}
    assert call("state::list_groups") == {"groups": []}
    assert call("state::get", scope="", key="k")["code"] == "bad_request"


# --- subscribe / publish ----------------------------------------------------------------


def test_publish_fans_out_to_every_subscriber(core: Core) -> None:
    reg(core, id="a", type="subscribe", function_id="job", config={"topic": "news"})
    reg(core, id="b", type="subscribe", function_id="gate", config={"topic": "news"})
    reg(core, id="c", type="subscribe", function_id="job", config={"topic": "sport"})
    out = core.call(2, "publish", {"topic": "news", "data": {"headline": "hi"}},
                    invocation_id="p")
    calls = invocations(out)
    assert sorted(c["function_id"] for c in calls) == ["gate", "job"]
    assert all(c["data"] == {"headline": "hi"} for c in calls)
    [answer] = [m for c, m in out if c == 2]
    assert answer["result"] == {"subscribers": 2}


# --- conditions -------------------------------------------------------------------------


def fire_with_condition(core: Core) -> dict[str, Any]:
    reg(core, id="t", type="subscribe", function_id="job",
        config={"topic": "x", "condition_function_id": "gate"})
    [condition] = invocations(core.call(2, "publish", {"topic": "x", "data": {"v": 1}},
                                        invocation_id="p"))
    assert condition["function_id"] == "gate" and condition["data"] == {"v": 1}
    return condition


@pytest.mark.parametrize("value", [True, 1, "yes", [], {}, 0.5])
def test_a_truthy_condition_runs_the_target(core: Core, value: Any) -> None:
    condition = fire_with_condition(core)
    [target] = invocations(core.send(1, result(condition["invocation_id"], result=value)))
    assert target["function_id"] == "job" and target["data"] == {"v": 1}


@pytest.mark.parametrize("value", [False, None, 0, "", 0.0])
def test_a_falsy_condition_skips_and_says_why(core: Core, value: Any) -> None:
    condition = fire_with_condition(core)
    assert invocations(core.send(1, result(condition["invocation_id"], result=value))) == []
    [skip] = events(core, "trigger.skipped")
    assert skip["trigger_id"] == "t" and "returned" in skip["reason"]


def test_a_failing_condition_skips(core: Core) -> None:
    condition = fire_with_condition(core)
    core.send(1, result(condition["invocation_id"], error={"code": "boom", "message": "no"}))
    [skip] = events(core, "trigger.skipped")
    assert "failed: boom: no" in skip["reason"]


def test_a_missing_condition_skips(core: Core) -> None:
    reg(core, id="t", type="subscribe", function_id="job",
        config={"topic": "x", "condition_function_id": "nobody::home"})
    assert invocations(core.call(2, "publish", {"topic": "x"}, invocation_id="p")) == []
    [skip] = events(core, "trigger.skipped")
    assert "function_not_found" in skip["reason"]


def test_a_condition_that_times_out_skips(core: Core) -> None:
    fire_with_condition(core)
    assert invocations(core.advance(31)) == []
    [skip] = events(core, "trigger.skipped")
    assert "TIMEOUT" in skip["reason"]


def test_a_condition_whose_worker_leaves_skips(core: Core) -> None:
    fire_with_condition(core)
    core.disconnect(1)
    [skip] = events(core, "trigger.skipped")
    assert "invocation_stopped" in skip["reason"]


def test_a_daemon_function_can_be_the_condition(core: Core) -> None:
    reg(core, id="t", type="subscribe", function_id="job",
        config={"topic": "x", "condition_function_id": "state::get"})
    assert invocations(core.call(2, "publish", {"topic": "x",
                                                "data": {"scope": "f", "key": "on"}},
                                 invocation_id="p")) == []
    core.call(2, "state::set", {"scope": "f", "key": "on", "value": True}, invocation_id="s")
    [target] = invocations(core.call(2, "publish", {"topic": "x",
                                                    "data": {"scope": "f", "key": "on"}},
                                     invocation_id="p"))
    assert target["function_id"] == "job"


# --- outcomes ---------------------------------------------------------------------------


def test_outcomes_are_recorded_and_a_missing_function_too(core: Core) -> None:
    reg(core, id="t", type="subscribe", function_id="job", config={"topic": "x"})
    reg(core, id="m", type="subscribe", function_id="ghost", config={"topic": "x"})
    [call] = invocations(core.call(2, "publish", {"topic": "x"}, invocation_id="p"))
    core.send(1, result(call["invocation_id"], error={"code": "bad", "message": "m"}))
    finished = {e["trigger_id"]: e for e in events(core, "invocation.finished")}
    assert finished["t"]["status"] == "error" and finished["t"]["error"]["code"] == "bad"
    assert finished["t"]["source"] == "trigger:subscribe"
    assert finished["m"]["error"]["code"] == "function_not_found"
    [(_, answer)] = core.call(2, "engine::events::list", {"event": "trigger.fired"},
                              invocation_id="e")
    assert [e["trigger_id"] for e in answer["result"]["events"]] == ["t", "m"]


# --- ownership --------------------------------------------------------------------------


def test_worker_triggers_are_answered_and_go_with_the_worker(core: Core) -> None:
    out = core.send(2, {"type": "registertrigger", "id": "w1", "trigger_type": "subscribe",
                        "function_id": "job", "config": {"topic": "x"}})
    assert out == [(2, {"type": "triggerregistrationresult", "id": "w1",
                        "trigger_type": "subscribe", "function_id": "job"})]
    reg(core, id="d1", type="subscribe", function_id="job", config={"topic": "x"})
    assert len(invocations(core.call(1, "publish", {"topic": "x"}, invocation_id="p"))) == 2
    core.disconnect(2)
    assert set(core.router.triggers.bindings) == {"d1"}


def test_a_bad_worker_trigger_gets_an_error_result(core: Core) -> None:
    [(_, answer)] = core.send(2, {"type": "registertrigger", "id": "w1", "trigger_type": "cron",
                                  "function_id": "job", "config": {"expression": "nope"}})
    assert answer["type"] == "triggerregistrationresult"
    assert answer["error"]["code"] == "trigger_registration_failed"


def test_trigger_ids_belong_to_their_owner(core: Core) -> None:
    core.send(2, {"type": "registertrigger", "id": "mine", "trigger_type": "subscribe",
                  "function_id": "job", "config": {"topic": "x"}})
    # The same worker re-registering its id replaces it (the official SDK replays so).
    core.send(2, {"type": "registertrigger", "id": "mine", "trigger_type": "subscribe",
                  "function_id": "gate", "config": {"topic": "y"}})
    assert core.router.triggers.bindings["mine"].function_id == "gate"
    [(_, refused)] = core.send(1, {"type": "registertrigger", "id": "mine",
                                   "trigger_type": "subscribe", "function_id": "job",
                                   "config": {"topic": "x"}})
    assert "already registered by worker" in refused["error"]["message"]
    answer = reg(core, id="mine", type="subscribe", function_id="job", config={"topic": "x"})
    assert answer["error"]["code"] == "trigger_registration_failed"
    [(_, unreg)] = core.call(1, "engine::unregister_trigger", {"id": "mine"},
                             invocation_id="u")
    assert unreg["error"]["code"] == "bad_request"
    [(_, gone)] = core.call(1, "engine::unregister_trigger", {"id": "nope"},
                            invocation_id="u")
    assert gone["result"] == {"removed": False}


def test_several_triggers_on_one_function(core: Core) -> None:
    reg(core, id="a", type="subscribe", function_id="job", config={"topic": "x"})
    reg(core, id="b", type="state", function_id="job", config={"scope": "s"})
    reg(core, id="c", type="cron", function_id="job", config={"expression": "* * * * * *"})
    assert len(invocations(core.call(2, "publish", {"topic": "x"}, invocation_id="p"))) == 1
    assert len(invocations(core.call(2, "state::set", {"scope": "s", "key": "k", "value": 1},
                                     invocation_id="s"))) == 1
    assert len(invocations(core.advance(1))) == 1


# --- worker-provided types --------------------------------------------------------------


def test_custom_type_pending_bound_pending(core: Core) -> None:
    answer = reg(core, id="h1", type="webhook", function_id="job", config={"path": "/a"},
                 metadata={"m": 1})
    assert answer["result"]["status"] == "pending"
    core.connect(3)  # the provider
    out = core.send(3, {"type": "registertriggertype", "id": "webhook",
                        "description": "POSTs"})
    assert out == [(3, {"type": "registertrigger", "id": "h1", "trigger_type": "webhook",
                        "function_id": "job", "config": {"path": "/a"},
                        "metadata": {"m": 1}})]
    assert core.router.triggers.bindings["h1"].status == "binding"
    core.send(3, {"type": "triggerregistrationresult", "id": "h1", "trigger_type": "webhook",
                  "function_id": "job"})
    assert core.router.triggers.bindings["h1"].status == "active"
    core.disconnect(3)
    assert core.router.triggers.bindings["h1"].status == "pending"
    [(_, listed)] = core.call(2, "engine::triggers::list", invocation_id="l")
    webhook = [t for t in listed["result"]["triggers"] if t["id"] == "webhook"]
    assert webhook == [{"id": "webhook", "worker_name": None, "description": None,
                        "provider": None, "trigger_count": 1}]


def test_a_provider_refusal_is_relayed_and_unregister_is_forwarded(core: Core) -> None:
    core.connect(3)
    core.send(3, {"type": "registertriggertype", "id": "webhook", "description": "d"})
    [(conn, forwarded)] = core.send(2, {"type": "registertrigger", "id": "w",
                                        "trigger_type": "webhook", "function_id": "job",
                                        "config": {"path": "/x"}})
    assert conn == 3 and forwarded["type"] == "registertrigger"
    out = core.send(3, {"type": "triggerregistrationresult", "id": "w",
                        "trigger_type": "webhook", "function_id": "job",
                        "error": {"code": "bad_path", "message": "no such path"}})
    assert out == [(2, {"type": "triggerregistrationresult", "id": "w",
                        "trigger_type": "webhook", "function_id": "job",
                        "error": {"code": "bad_path", "message": "no such path"}})]
    binding = core.router.triggers.bindings["w"]
    assert (binding.status, binding.error) == ("error", "no such path")
    assert core.send(2, {"type": "unregistertrigger", "id": "w"}) == [
        (3, {"type": "unregistertrigger", "id": "w", "trigger_type": "webhook",
             "function_id": "job", "config": {"path": "/x"}})]


def test_a_provider_that_never_answers_leaves_the_binding_binding(core: Core) -> None:
    core.connect(3)
    core.send(3, {"type": "registertriggertype", "id": "webhook", "description": "d"})
    reg(core, id="q", type="webhook", function_id="job", config={})
    core.advance(60)
    assert core.router.triggers.bindings["q"].status == "binding"


def test_worker_disconnect_tells_the_provider(core: Core) -> None:
    core.connect(3)
    core.send(3, {"type": "registertriggertype", "id": "webhook", "description": "d"})
    core.send(2, {"type": "registertrigger", "id": "w", "trigger_type": "webhook",
                  "function_id": "job", "config": {}})
    out = core.disconnect(2)
    assert [(c, m["type"], m["id"]) for c, m in out] == [(3, "unregistertrigger", "w")]


@pytest.mark.parametrize("type_id", ["cron", "state", "subscribe", "http"])
def test_builtin_type_ids_are_reserved(core: Core, type_id: str) -> None:
    [(_, error)] = core.send(1, {"type": "registertriggertype", "id": type_id,
                                 "description": "mine"})
    assert error["code"] == "bad_request" and "reserved" in error["message"]


def test_a_type_has_one_provider(core: Core) -> None:
    core.connect(3)
    core.send(3, {"type": "registertriggertype", "id": "webhook", "description": "d"})
    [(_, error)] = core.send(1, {"type": "registertriggertype", "id": "webhook",
                                 "description": "d"})
    assert "already provided" in error["message"]


# --- persistence ------------------------------------------------------------------------


def test_daemon_owned_triggers_and_state_survive_a_restart() -> None:
    first = Core()
    first.router.start(first.now, WALL)
    first.connect(2)
    reg(first, id="c", type="cron", function_id="job", config={"expression": "* * * * * *"})
    reg(first, id="p", type="webhook", function_id="job", config={})
    first.call(2, "state::set", {"scope": "s", "key": "k", "value": 7}, invocation_id="s")
    first.send(2, {"type": "registertrigger", "id": "w", "trigger_type": "subscribe",
                   "function_id": "job", "config": {"topic": "x"}})

    second = Core()
    second.router.start(second.now, WALL + 100, first.disk.stored())
    assert {b.id: b.status for b in second.router.triggers.bindings.values()} == {
        "c": "active", "p": "pending"}  # the worker's own trigger did not persist
    second.connect(1)
    second.register(1, "job")
    assert len(invocations(second.advance(1))) == 1
    [(_, value)] = second.call(1, "state::get", {"scope": "s", "key": "k"}, invocation_id="g")
    assert value["result"] == 7


def test_an_answer_that_depends_on_a_write_waits_for_its_commit(core: Core) -> None:
    """The core asks for the write and tells nobody until it landed: no answer, no
    state trigger fired; then both."""
    reg(core, id="s", type="state", function_id="job", config={"scope": "orders"})
    core.disk.holding = True
    out = core.call(2, "state::set", {"scope": "orders", "key": "k", "value": 1},
                    invocation_id="s")
    assert out == [] and len(core.disk.held) == 1
    # A read of that key waits behind the write; other calls do not.
    assert core.call(2, "state::get", {"scope": "orders", "key": "k"},
                     invocation_id="g") == []
    assert core.call(2, "state::list", {"scope": "orders"}, invocation_id="l") == []
    [(_, other)] = core.call(2, "state::get", {"scope": "orders", "key": "other"},
                             invocation_id="o")
    assert other["invocation_id"] == "o"
    out = core.land()
    assert [m["invocation_id"] for c, m in out if c == 2] == ["s", "g", "l"]
    assert [m.get("result") for c, m in out if c == 2][1:] == [1, [1]]
    assert len(invocations(out)) == 1 and core.disk.state == {("orders", "k"): 1}


def test_a_read_behind_a_failed_write_sees_what_the_disk_holds(core: Core) -> None:
    core.call(2, "state::set", {"scope": "s", "key": "k", "value": "old"}, invocation_id="0")
    core.disk.holding = True
    core.call(2, "state::set", {"scope": "s", "key": "k", "value": "new"}, invocation_id="1")
    core.call(2, "state::get", {"scope": "s", "key": "k"}, invocation_id="g")
    core.disk.failing = "disk full"
    out = core.land()
    assert [(m["invocation_id"], m.get("result"), "error" in m) for c, m in out] == [
        ("1", None, True), ("g", "old", False)]


def test_a_failed_store_write_keeps_memory_and_disk_in_step(core: Core) -> None:
    reg(core, id="keep", type="subscribe", function_id="job", config={"topic": "x"})
    core.disk.failing = "store write failed: database or disk is full"
    [(_, answer)] = core.call(2, "engine::unregister_trigger", {"id": "keep"},
                              invocation_id="u")
    assert answer["error"] == {"code": "invocation_failed",
                               "message": "store write failed: database or disk is full"}
    assert core.router.triggers.bindings["keep"].status == "active"  # bound again
    answer = reg(core, id="new", type="subscribe", function_id="job", config={"topic": "y"})
    assert answer["error"]["code"] == "invocation_failed"
    assert "new" not in core.router.triggers.bindings
    assert set(core.disk.triggers) == {"keep"}


def test_a_failed_state_write_is_reported_and_fires_nothing(core: Core) -> None:
    reg(core, id="s", type="state", function_id="job", config={"scope": "orders"})
    core.disk.failing = "store write failed: database or disk is full"
    [(conn, answer)] = core.call(2, "state::set", {"scope": "orders", "key": "k", "value": 1},
                                 invocation_id="s")
    assert conn == 2 and answer["error"] == {
        "code": "invocation_failed", "message": "store write failed: database or disk is full"}
    [(_, got)] = core.call(2, "state::get", {"scope": "orders", "key": "k"},
                           invocation_id="g")
    assert got.get("result") is None  # memory went back to what the disk holds


def test_writes_that_fail_among_writes_that_land_leave_what_the_disk_has() -> None:
    """Several changes of one key in flight, some failing: memory ends as the disk."""
    core = Core()
    core.router.start(core.now, WALL)
    core.connect(2)
    state = core.router.state
    core.call(2, "state::set", {"scope": "s", "key": "k", "value": "disk"},
              invocation_id="0")
    core.disk.holding = True
    for value in ("a", "b", "c"):
        core.call(2, "state::set", {"scope": "s", "key": "k", "value": value},
                  invocation_id=value)
    assert state.get("s", "k") == "c"
    a, b, c = core.disk.held
    core.disk.commit(a)                                  # a lands
    core.disk.failing = "disk full"
    core.disk.commit(c)                                  # c fails before b resolved
    core._render(core.router.persisted(a, core.now))
    core._render(core.router.persisted(c, core.now))
    assert state.get("s", "k") == "b"                    # b may still land
    core.disk.commit(b)                                  # b fails too
    core._render(core.router.persisted(b, core.now))
    assert state.get("s", "k") == "a" == core.disk.state[("s", "k")]
    assert len(state.unsettled) == 0


def test_a_taken_id_is_not_silently_replaced(core: Core) -> None:
    first = reg(core, id="x", type="subscribe", function_id="job", config={"topic": "a"})
    assert "error" not in first
    again = reg(core, id="x", type="subscribe", function_id="job", config={"topic": "a"})
    assert "error" not in again  # the same registration twice: fine (scripts re-run)
    other = reg(core, id="x", type="subscribe", function_id="gate", config={"topic": "a"})
    assert other["error"]["code"] == "bad_request"
    assert "already exists (subscribe -> job)" in other["error"]["message"]
    assert core.router.triggers.bindings["x"].function_id == "job"
    replaced = reg(core, id="x", type="subscribe", function_id="gate",
                   config={"topic": "a"}, replace=True)
    assert "error" not in replaced and core.router.triggers.bindings["x"].function_id == "gate"
