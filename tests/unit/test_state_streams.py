"""``state::*`` and ``stream::*`` in the router core, as the upstream engine shapes them:
protocol.md § Functions the daemon provides; the trigger types ``state`` and ``stream``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_router import Core
from tests.unit.test_triggers import WALL, invocations, reg


@pytest.fixture
def core() -> Core:
    c = Core()
    c.router.start(c.now, WALL)
    c.connect(1)  # worker serving functions (and, later, a stream backend)
    c.connect(2)  # caller / registrant
    c.register(1, "job")
    return c


def call(core: Core, function_id: str, **data: Any) -> Any:
    [answer] = [m for c, m in core.call(2, function_id, data, invocation_id="q") if c == 2]
    return answer.get("result", answer.get("error"))


def test_update_applies_ops_and_fires_created_then_updated(core: Core) -> None:
    reg(core, id="s", type="state", function_id="job", config={"scope": "orders"})
    out = core.call(2, "state::update", {"scope": "orders", "key": "o1", "ops": [
        {"type": "set", "path": "status", "value": "new"},
        {"type": "increment", "path": "count", "by": 1}]}, invocation_id="u")
    [answer] = [m for c, m in out if c == 2]
    assert answer["result"] == {"old_value": None,
                                "new_value": {"status": "new", "count": 1}}
    [fired] = invocations(out)
    assert fired["data"]["event_type"] == "state:created"
    out = core.call(2, "state::update", {"scope": "orders", "key": "o1", "ops": [
        {"type": "increment", "path": "status", "by": 1},
        {"type": "append", "path": "log", "value": "paid"}]}, invocation_id="u2")
    [answer] = [m for c, m in out if c == 2]
    assert answer["result"]["new_value"] == {"status": "new", "count": 1, "log": "paid"}
    assert [e["code"] for e in answer["result"]["errors"]] == ["increment.not_number"]
    [fired] = invocations(out)
    assert fired["data"] | {"type": "state"} == {
        "type": "state", "event_type": "state:updated", "scope": "orders", "key": "o1",
        "old_value": {"status": "new", "count": 1},
        "new_value": {"status": "new", "count": 1, "log": "paid"}}
    assert core.disk.state[("orders", "o1")] == {"status": "new", "count": 1, "log": "paid"}


def test_a_malformed_op_writes_nothing(core: Core) -> None:
    call(core, "state::set", scope="s", key="k", value={"n": 1})
    commits = core.disk.commits
    error = call(core, "state::update", scope="s", key="k", ops=[
        {"type": "increment", "path": "n", "by": 1}, {"type": "multiply", "path": "n"}])
    assert error["code"] == "bad_request" and "op 1" in error["message"]
    assert call(core, "state::get", scope="s", key="k") == {"n": 1}
    assert core.disk.commits == commits


def test_list_is_a_plain_list_and_list_groups_names_scopes(core: Core) -> None:
    for scope, key, value in (("b", "2", "two"), ("b", "1", "one"), ("a", "x", None)):
        call(core, "state::set", scope=scope, key=key, value=value)
    assert call(core, "state::list", scope="b") == ["one", "two"]
    assert call(core, "state::list", scope="nothing") == []
    assert call(core, "state::list_groups") == {"groups": ["a", "b"]}


def test_a_state_trigger_without_scope_fires_for_every_scope(core: Core) -> None:
    [answer] = [m for c, m in core.call(2, "engine::register_trigger", {
        "id": "all", "type": "state", "function_id": "job", "config": {}},
        invocation_id="r") if c == 2]
    assert "error" not in answer
    reg(core, id="only-k", type="state", function_id="job", config={"key": "k"})
    first = invocations(core.call(2, "state::set", {"scope": "a", "key": "k", "value": 1},
                                  invocation_id="1"))
    second = invocations(core.call(2, "state::set", {"scope": "b", "key": "other",
                                                     "value": 2}, invocation_id="2"))
    assert [f["data"]["scope"] for f in first] == ["a", "a"]  # both triggers
    assert [(f["data"]["scope"], f["data"]["key"]) for f in second] == [("b", "other")]


# --- streams ----------------------------------------------------------------------------


def item(**extra: Any) -> dict[str, Any]:
    return {"stream_name": "todo", "group_id": "inbox", "item_id": "t1", **extra}


def test_stream_functions_on_the_built_in_store(core: Core) -> None:
    assert call(core, "stream::get", **item()) is None
    assert call(core, "stream::set", **item(data={"title": "a"})) == {
        "old_value": None, "new_value": {"title": "a"}}
    assert call(core, "stream::update", **item(ops=[
        {"type": "set", "path": "done", "value": True}])) == {
        "old_value": {"title": "a"}, "new_value": {"title": "a", "done": True}}
    call(core, "stream::set", **item(item_id="t0", data="first"))
    call(core, "stream::set", **item(group_id="later", data=1))
    assert call(core, "stream::list", stream_name="todo", group_id="inbox") == [
        "first", {"title": "a", "done": True}]
    assert call(core, "stream::list_groups", stream_name="todo") == ["inbox", "later"]
    assert call(core, "stream::list_groups", stream_name="other") == []
    assert call(core, "stream::list_all") == {
        "stream": [{"id": "todo", "groups": ["inbox", "later"]}], "count": 1}
    assert call(core, "stream::delete", **item()) == {"old_value": {"title": "a", "done": True}}
    assert call(core, "stream::delete", **item()) == {"old_value": None}
    assert core.disk.streams == {("todo", "inbox", "t0"): "first", ("todo", "later", "t1"): 1}
    # Streams and state are apart: the same names in state see nothing.
    assert call(core, "state::list_groups") == {"groups": []}
    assert call(core, "stream::get", stream_name="todo", group_id="inbox")["code"] == \
        "bad_request"


def test_stream_triggers_fire_on_changes_and_sends(core: Core) -> None:
    reg(core, id="all", type="stream", function_id="job", config={"stream_name": "todo"})
    reg(core, id="t2", type="stream", function_id="job",
        config={"stream_name": "todo", "group_id": "inbox", "item_id": "t2"})
    reg(core, id="x", type="stream", function_id="job", config={"stream_name": "other"})
    [created] = invocations(core.call(2, "stream::set", item(data={"n": 1}),
                                      invocation_id="s"))
    data = created["data"]
    assert {k: data[k] for k in ("type", "streamName", "groupId", "id", "event")} == {
        "type": "stream", "streamName": "todo", "groupId": "inbox", "id": "t1",
        "event": {"type": "create", "data": {"n": 1}}}
    assert data["timestamp"] == int(WALL * 1000)
    assert (data["event_type"], data["old_value"], data["new_value"]) == ("create", None,
                                                                          {"n": 1})
    [updated] = invocations(core.call(2, "stream::update", item(ops=[
        {"type": "increment", "path": "n", "by": 2}]), invocation_id="u"))
    assert updated["data"]["event"] == {"type": "update", "data": {"n": 3}}
    [deleted] = invocations(core.call(2, "stream::delete", item(), invocation_id="d"))
    assert deleted["data"]["event"] == {"type": "delete", "data": {"n": 3}}
    out = core.call(2, "stream::send", {"stream_name": "todo", "group_id": "inbox",
                                        "id": "t2", "type": "typing", "data": {"who": "ann"}},
                    invocation_id="e")
    assert [m.get("result") for c, m in out if c == 2] == [None]
    sent = invocations(out)
    assert len(sent) == 2  # the whole stream, and the one watching item t2
    assert sent[0]["data"]["event"] == {"type": "event",
                                        "event": {"type": "typing", "data": {"who": "ann"}}}
    assert ("todo", "inbox", "t2") not in core.disk.streams  # a send is not stored
    assert "stream_name" in reg(core, id="bad", type="stream", function_id="job",
                                config={})["error"]["message"]


def backend(core: Core, *ops: str) -> None:
    for op in ops:
        core.register(1, f"stream::{op}(todo)")


def answer_call(core: Core, out: list[tuple[int, Any]], result: Any) -> list[tuple[int, Any]]:
    """The backend (connection 1) answers the call the daemon made to it."""
    [forwarded] = [m for c, m in out if c == 1 and m["type"] == "invokefunction"]
    return core.send(1, {"type": "invocationresult", "invocation_id": forwarded["invocation_id"],
                         "function_id": forwarded["function_id"], "result": result})


def test_a_worker_serving_a_stream_gets_its_calls(core: Core) -> None:
    """What the official SDK's ``create_stream`` registers: ``stream::get(NAME)`` and the
    rest; calls for that stream go there, other streams stay in the built-in store."""
    backend(core, "get", "set", "list", "list_groups", "delete")
    out = core.call(2, "stream::get", item(), invocation_id="g")
    [forwarded] = [m for c, m in out if c == 1]
    assert (forwarded["function_id"], forwarded["data"]) == ("stream::get(todo)", item())
    [(_, got)] = answer_call(core, out, {"title": "from the backend"})
    assert got["result"] == {"title": "from the backend"}
    reg(core, id="w", type="stream", function_id="job", config={"stream_name": "todo"})
    out = core.call(2, "stream::set", item(data=5), invocation_id="s")
    back = answer_call(core, out, {"old_value": 4, "new_value": 5})
    assert [m["result"] for c, m in back if c == 2] == [{"old_value": 4, "new_value": 5}]
    [fired] = invocations(back)
    assert fired["data"]["event"] == {"type": "update", "data": 5}
    out = core.call(2, "stream::list_groups", {"stream_name": "todo"}, invocation_id="l")
    assert [m["result"] for c, m in answer_call(core, out, ["g1"]) if c == 2] == [["g1"]]
    assert call(core, "stream::set", **item(stream_name="mine", data=1))["new_value"] == 1
    assert core.disk.streams == {("mine", "inbox", "t1"): 1}
    # The backend's errors are the caller's.
    out = core.call(2, "stream::delete", item(), invocation_id="d")
    [forwarded] = [m for c, m in out if c == 1 and m["type"] == "invokefunction"]
    back = core.send(1, {"type": "invocationresult", "invocation_id": forwarded["invocation_id"],
                         "error": {"code": "nope", "message": "read only"}})
    assert [m["error"]["code"] for c, m in back if c == 2] == ["nope"]


def test_update_through_a_backend_reads_runs_the_ops_and_writes_one_at_a_time(
        core: Core) -> None:
    backend(core, "get", "set")
    ops = [{"type": "increment", "path": "n", "by": 1}]
    first = core.call(2, "stream::update", item(ops=ops), invocation_id="u1")
    second = core.call(2, "stream::update", item(ops=ops), invocation_id="u2")
    assert [m["function_id"] for c, m in first if c == 1] == ["stream::get(todo)"]
    assert [m for c, m in second if c == 1] == []  # waits for the first to finish
    wrote = answer_call(core, first, {"n": 1})
    [put] = [m for c, m in wrote if c == 1]
    assert (put["function_id"], put["data"]["data"]) == ("stream::set(todo)", {"n": 2})
    done = answer_call(core, wrote, {"old_value": {"n": 1}, "new_value": {"n": 2}})
    assert [m["result"] for c, m in done if c == 2] == [{"old_value": {"n": 1},
                                                         "new_value": {"n": 2}}]
    # The second starts now, reading what the first wrote.
    [get] = [m for c, m in done if c == 1]
    assert get["function_id"] == "stream::get(todo)"
    wrote = answer_call(core, done, {"n": 2})
    assert [m["data"]["data"] for c, m in wrote if c == 1] == [{"n": 3}]
    assert core.router.services.turns != {}
    answer_call(core, wrote, None)
    assert core.router.services.turns == {}


def test_a_backend_that_leaves_mid_update_frees_the_item(core: Core) -> None:
    backend(core, "get", "set")
    ops = [{"type": "set", "path": "x", "value": 1}]
    core.call(2, "stream::update", item(ops=ops), invocation_id="u1")
    core.call(2, "stream::update", item(ops=ops), invocation_id="u2")
    out = core.disconnect(1)
    answers = [m for c, m in out if c == 2]
    assert [a["invocation_id"] for a in answers] == ["u1", "u2"]
    assert core.router.services.turns == {}
    # The backend is gone: the built-in store serves the stream again.
    assert call(core, "stream::update", **item(ops=ops)) == {"old_value": None,
                                                              "new_value": {"x": 1}}


def test_a_worker_may_serve_update_itself(core: Core) -> None:
    backend(core, "update")
    out = core.call(2, "stream::update", item(ops=[]), invocation_id="u")
    [forwarded] = [m for c, m in out if c == 1]
    assert forwarded["function_id"] == "stream::update(todo)"
    back = answer_call(core, out, {"old_value": None, "new_value": {"mine": True}})
    assert [m["result"] for c, m in back if c == 2] == [{"old_value": None,
                                                         "new_value": {"mine": True}}]


def test_an_update_through_a_backend_that_cannot_apply_frees_the_item(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever goes wrong between the get and the set, the caller hears and the next
    update of the item goes."""
    from iii_daemon.core.errors import CallError
    from iii_daemon.functions import stream as stream_functions

    def too_deep(value: Any, ops: Any) -> Any:
        raise CallError("bad_request", "the value is nested too deeply to update")

    monkeypatch.setattr(stream_functions, "apply_ops", too_deep)
    backend(core, "get", "set")
    first = core.call(2, "stream::update", item(ops=[]), invocation_id="u1")
    second = core.call(2, "stream::update", item(ops=[]), invocation_id="u2")
    assert [m for c, m in second if c == 1] == []  # waits its turn
    out = answer_call(core, first, {"deep": "value"})
    [failed] = [m for c, m in out if c == 2]
    assert (failed["invocation_id"], failed["error"]["code"]) == ("u1", "bad_request")
    assert [m["function_id"] for c, m in out if c == 1] == ["stream::get(todo)"]  # u2 goes


def test_a_daemon_bug_in_a_later_answer_still_answers(core: Core) -> None:
    import dataclasses

    backend(core, "get")
    core.router.services = dataclasses.replace(core.router.services, call=None)
    error = call(core, "stream::get", **item())
    assert error["code"] == "invocation_failed"


def test_the_table_keeps_json_text_and_every_read_is_a_copy() -> None:
    """State at scale: values are held as their JSON text (a third of the memory of
    Python objects); a read decodes its own copy, so changing it changes nothing kept."""
    from iii_daemon.core.state_table import StateTable
    from iii_daemon.core.unsettled import MISSING

    table: StateTable[str] = StateTable()
    table.set("s", "k", {"items": [1, 2], "price": 1.5, "big": 2**70, "name": "café"})
    read = table.get("s", "k")
    assert read == {"items": [1, 2], "price": 1.5, "big": 2**70, "name": "café"}
    read["items"].append(3)
    assert table.get("s", "k")["items"] == [1, 2]
    table.set_json("s", "j", '{"from": "the store"}')  # as loaded: text, not decoded
    assert table.items("s") == [("j", {"from": "the store"}), ("k", table.get("s", "k"))]
    table.set("s", "k", MISSING)
    assert table.get("s", "k") is MISSING and table.scopes() == ["s"]
