"""The stream socket's core (core/stream_clients.py, core/stream_joining.py): joins,
syncs, changes, leaves and the join/leave triggers, driven through the router as the
driver does, without a socket."""

from __future__ import annotations

import json
from typing import Any

import pytest

from iii_daemon.core.errors import CallError
from iii_daemon.core.stream_clients import StreamClients, parse_join
from tests.unit.test_router import Core
from tests.unit.test_triggers import WALL, invocations, reg


@pytest.fixture
def core() -> Core:
    c = Core()
    c.router.start(c.now, WALL)
    c.connect(1)  # a worker: the join/leave trigger functions
    c.connect(2)  # a caller: writes to streams
    c.register(1, "rooms::join")
    c.register(1, "rooms::leave")
    c.router.stream_client_opened(7, {"user": "ann"}, "127.0.0.1:5000", c.now)
    return c


def said(core: Core, message: Any, client: int = 7) -> list[tuple[int, Any]]:
    frame = message if isinstance(message, str) else json.dumps(message)
    return core._render(core.router.stream_client_said(client, frame, core.now))


def pushed(out: list[tuple[int, Any]], client: int = 7) -> list[dict[str, Any]]:
    return [f for _, m in out if isinstance(m, tuple) and m[0] == "push" and m[1] == client
            for f in m[2]]


def join(core: Core, sid: str, group: str = "inbox", item: str | None = None,
         client: int = 7) -> list[tuple[int, Any]]:
    data = {"subscriptionId": sid, "streamName": "todo", "groupId": group}
    if item is not None:
        data["id"] = item
    return said(core, {"type": "join", "data": data}, client)


def stream(core: Core, op: str, **data: Any) -> list[tuple[int, Any]]:
    return core.call(2, f"stream::{op}", {"stream_name": "todo", "group_id": "inbox", **data},
                     invocation_id="w")


def test_a_join_syncs_the_group_then_changes_follow(core: Core) -> None:
    stream(core, "set", item_id="a", data={"t": 1})
    [sync] = pushed(join(core, "g"))
    assert sync == {"subscriptionId": "g", "type": "stream", "timestamp": sync["timestamp"],
                    "streamName": "todo", "groupId": "inbox", "id": None,
                    "event": {"type": "sync", "data": [{"t": 1}]}}
    [item_sync] = pushed(join(core, "i", item="b"))
    assert item_sync["event"] == {"type": "sync", "data": None}
    both = pushed(stream(core, "set", item_id="b", data=2))
    assert [(f["subscriptionId"], f["event"]) for f in both] == \
        [("g", {"type": "create", "data": 2}), ("i", {"type": "create", "data": 2})]
    [only_group] = pushed(stream(core, "delete", item_id="a"))
    assert (only_group["subscriptionId"], only_group["event"]) == \
        ("g", {"type": "delete", "data": {"t": 1}})
    assert pushed(core.call(2, "stream::set", {"stream_name": "todo", "group_id": "other",
                                               "item_id": "b", "data": 3})) == []
    [sent] = pushed(stream(core, "send", type="typing", data={"who": "ann"}))
    assert sent["event"] == {"type": "event", "event": {"type": "typing",
                                                       "data": {"who": "ann"}}}
    joined = [e for e in core.router.events if e["event"] == "stream.joined"]
    assert [(e["subscription_id"], e["id"], e["client"]) for e in joined] == \
        [("g", None, "127.0.0.1:5000"), ("i", "b", "127.0.0.1:5000")]


def test_leave_and_close_stop_the_frames_and_fire_leave_triggers(core: Core) -> None:
    reg(core, id="bye", type="stream:leave", function_id="rooms::leave", config={})
    join(core, "g")
    join(core, "i", item="x")
    out = said(core, {"type": "leave", "data": {"subscriptionId": "g"}})
    [fired] = invocations(out)
    assert fired["function_id"] == "rooms::leave" and fired["data"] == {
        "subscription_id": "g", "stream_name": "todo", "group_id": "inbox", "id": None,
        "context": {"user": "ann"}}
    assert [f["subscriptionId"] for f in pushed(stream(core, "set", item_id="x", data=1))] \
        == ["i"]
    assert said(core, {"type": "leave", "data": {"subscriptionId": "g"}}) == []  # gone
    out = core._render(core.router.stream_client_closed(7, core.now))
    assert [f["data"]["subscription_id"] for f in invocations(out)] == ["i"]
    assert pushed(stream(core, "set", item_id="x", data=2)) == []
    assert len(core.router.stream_clients) == 0
    left = [e["subscription_id"] for e in core.router.events if e["event"] == "stream.left"]
    assert left == ["g", "i"]


def test_a_join_waits_for_its_triggers_and_one_may_refuse(core: Core) -> None:
    reg(core, id="door", type="stream:join", function_id="rooms::join", config={})
    out = join(core, "g")
    assert pushed(out) == []  # no sync before the join function answered
    [call] = invocations(out)
    assert call["data"]["context"] == {"user": "ann"}
    # A change while the join is decided is not sent: the client is not in yet.
    assert pushed(stream(core, "set", item_id="a", data=1)) == []
    out = core.send(1, {"type": "invocationresult", "invocation_id": call["invocation_id"],
                        "result": {"unauthorized": True}})
    assert pushed(out) == [{"type": "unauthorized", "subscriptionId": "g",
                            "streamName": "todo", "groupId": "inbox", "id": None}]
    assert pushed(stream(core, "set", item_id="a", data=2)) == []
    [call] = invocations(join(core, "g2"))
    out = core.send(1, {"type": "invocationresult", "invocation_id": call["invocation_id"],
                        "result": {"unauthorized": False}})
    [sync] = pushed(out)
    assert sync["subscriptionId"] == "g2" and sync["event"]["data"] == [2]
    refused = [e for e in core.router.events if e["event"] == "stream.refused"]
    assert [(e["subscription_id"], e["reason"]) for e in refused] == [("g", "unauthorized")]


def test_a_failing_join_function_refuses(core: Core) -> None:
    reg(core, id="door", type="stream:join", function_id="rooms::join", config={})
    [call] = invocations(join(core, "g"))
    out = core.send(1, {"type": "invocationresult", "invocation_id": call["invocation_id"],
                        "error": {"code": "boom", "message": "database down"}})
    [refusal] = pushed(out)
    assert refusal["type"] == "unauthorized"
    [event] = [e for e in core.router.events if e["event"] == "stream.refused"]
    assert event["reason"] == "boom: database down"


def test_changes_during_a_sync_wait_behind_it() -> None:
    clients = StreamClients()
    client = clients.open(1, None, "peer")
    subscription = clients.join(client, "s", "todo", "inbox", None)
    change = {"streamName": "todo", "groupId": "inbox", "id": "a", "timestamp": 5,
              "event": {"type": "create", "data": 1}}
    assert clients.changed(change) == []  # held: the sync is not out yet
    frames = clients.synced(subscription, b'{"sync":true}')
    assert [json.loads(f) for f in frames] == [
        {"sync": True},
        {"subscriptionId": "s", "type": "stream", "timestamp": 5, "streamName": "todo",
         "groupId": "inbox", "id": "a", "event": {"type": "create", "data": 1}}]
    assert [c for c, _ in clients.changed(change)] == [1]  # now straight out


def test_changes_held_behind_a_slow_sync_are_bounded() -> None:
    clients = StreamClients()
    clients.max_waiting_bytes = 1000
    client = clients.open(1, None, "peer")
    subscription = clients.join(client, "s", "todo", "inbox", None)
    change = {"streamName": "todo", "groupId": "inbox", "id": "a", "timestamp": 5,
              "event": {"type": "create", "data": "x" * 300}}
    assert clients.changed(change) == clients.changed(change) == []  # held
    [(to, refusal)] = clients.changed(change)  # one more would pass the bound
    assert to == 1 and json.loads(refusal)["subscriptionId"] == "s"
    assert "came while its sync was read" in json.loads(refusal)["error"]["message"]
    assert not clients.is_current(subscription) and clients.changed(change) == []


def test_bad_frames_and_joins_are_answered_and_bounded(core: Core) -> None:
    core.router.stream_clients.max_subscriptions = 1
    assert pushed(said(core, "{"))[0]["error"]["message"] == "not a JSON object"
    nested = "[" * 30_000 + "]" * 30_000  # fits the 64 KiB frame; too deep to decode
    assert pushed(said(core, nested))[0]["error"]["message"] == "not a JSON object"
    assert "join" in pushed(said(core, {"type": "subscribe"}))[0]["error"]["message"]
    join(core, "one")
    [again] = pushed(join(core, "one", group="x"))
    assert "at most" not in again["error"]["message"] and "joined already" in \
        again["error"]["message"]
    [over] = pushed(join(core, "two"))
    assert over["subscriptionId"] == "two" and "1 subscriptions" in over["error"]["message"]
    assert said(core, {"type": "join", "data": {}}, client=99) == []  # not a client


@pytest.mark.parametrize("data", [None, [], {"subscriptionId": "s"},
                                  {"subscriptionId": "s", "streamName": 1, "groupId": "g"},
                                  {"subscriptionId": "", "streamName": "a", "groupId": "g"},
                                  {"subscriptionId": "s", "streamName": "a", "groupId": "g",
                                   "id": 5},
                                  {"subscriptionId": "s" * 300, "streamName": "a",
                                   "groupId": "g"}])
def test_a_join_must_name_what_it_joins(data: Any) -> None:
    with pytest.raises(CallError):
        parse_join(data)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_the_socket_frames_text_as_websockets_does(size: int) -> None:
    """The stream socket frames its messages itself (drivers/stream_socket.py): byte for
    byte what websockets' own server protocol writes."""
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    from iii_daemon.drivers.stream_socket import text_header

    protocol = ServerProtocol()
    protocol.state = State.OPEN
    payload = b"x" * size
    protocol.send_text(payload)
    assert b"".join(protocol.data_to_send()) == text_header(size) + payload
