"""The core's side of a shared backend (core/shared.py, core/shared_events.py), without
Redis: what it asks for, and what it does with the answers."""

from __future__ import annotations

import json
from typing import Any

from iii_daemon.core.effects import SharedOp
from iii_daemon.core.router import Router
from iii_daemon.core.shared import SharedOps
from iii_sdk import protocol as p
from iii_sdk.client.addresses import without_password

NOW = 100.0


def wire(out: list[tuple[int, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return [(conn, json.loads(p.encode(m))) for conn, m in out
            if not isinstance(m, SharedOp) and hasattr(m, "__struct_config__")]


def ops(out: list[tuple[int, Any]]) -> list[SharedOp]:
    return [m for _, m in out if isinstance(m, SharedOp)]


def claims(out: list[tuple[int, Any]]) -> list[SharedOp]:
    """The claims among the operations (the queues' tick goes out alongside)."""
    return [op for op in ops(out) if op.kind == "once"]


def expire_until_claimed(router: Router) -> tuple[float, list[tuple[int, Any]]]:
    """Run the router's deadlines (the queues' ticks among them) until one sends a
    claim."""
    for _ in range(10):
        due = router.next_deadline()
        assert due is not None
        out = router.expire(due)
        if claims(out):
            return due, out
    raise AssertionError("no claim went out")


def send(router: Router, conn: int, message: dict[str, Any]) -> list[tuple[int, Any]]:
    return router.handle(conn, p.decode(json.dumps(message).encode()), NOW)


def setup() -> Router:
    router = Router(shared=SharedOps("redis://:***@h:6379/0"))
    for conn in (1, 2):
        router.connect(conn, "unix", 1_700_000_000.0)
    send(router, 1, {"type": "registerfunction", "id": "w::got"})
    send(router, 1, {"type": "registertrigger", "id": "t1", "trigger_type": "subscribe",
                     "function_id": "w::got", "config": {"topic": "news"}})
    return router


def test_publish_goes_through_the_backend_and_is_answered_when_it_acknowledged() -> None:
    router = setup()
    out = send(router, 2, {"type": "invokefunction", "function_id": "publish",
                           "data": {"topic": "news", "data": 5}, "invocation_id": "c1"})
    [op] = ops(out)
    assert op.kind == "publish" and op.args["topic"] == "news" and op.args["data"] == 5
    assert wire(out) == []  # nothing fired yet, nobody answered yet
    [(conn, answer)] = wire(router.shared_done(op.op_id, 3, None, NOW))
    assert conn == 2 and answer["result"] == {"subscribers": 1, "daemons": 3}


def test_a_backend_that_is_away_is_backend_unavailable_naming_it() -> None:
    router = setup()
    [op] = ops(send(router, 2, {"type": "invokefunction", "function_id": "publish",
                                "data": {"topic": "news"}, "invocation_id": "c1"}))
    [(_, answer)] = wire(router.shared_done(op.op_id, None, "unreachable since 10:00", NOW))
    assert answer["error"]["code"] == "backend_unavailable"
    assert answer["error"]["message"] == "redis://:***@h:6379/0: unreachable since 10:00"


def test_a_message_fires_a_binding_only_where_its_claim_won() -> None:
    router = setup()
    [claim] = ops(router.shared_published("m1", "news", {"x": 1}, NOW))
    assert claim.kind == "once" and claim.args["key"] == "iii:once:t1:m1"
    [(conn, call)] = wire(router.shared_done(claim.op_id, True, None, NOW))
    assert conn == 1 and call["function_id"] == "w::got" and call["data"] == {"x": 1}
    [lost] = ops(router.shared_published("m2", "news", 2, NOW))
    assert wire(router.shared_done(lost.op_id, False, None, NOW)) == []  # another daemon's
    assert ops(router.shared_published("m3", "other", 3, NOW)) == []  # nobody subscribes


def test_urls_are_shown_without_their_password() -> None:
    assert without_password("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert without_password("rediss://user:pw@[::1]:6380") == "rediss://user:***@[::1]:6380"
    assert without_password("redis://h:6379/0") == "redis://h:6379/0"


def test_a_cron_tick_fires_only_where_its_claim_won() -> None:
    router = setup()
    router.tick_clock(NOW, 1_700_000_000.0)
    send(router, 1, {"type": "registertrigger", "id": "tick", "trigger_type": "cron",
                     "function_id": "w::got", "config": {"expression": "* * * * * *"}})
    due, out = expire_until_claimed(router)
    [claim] = claims(out)
    assert wire(out) == []  # nothing fired before the claim came back
    assert claim.args["key"] == "iii:once:tick:2023-11-14T22:13:21.000Z"
    [(conn, call)] = wire(router.shared_done(claim.op_id, True, None, due))
    assert conn == 1 and call["function_id"] == "w::got"
    _, out = expire_until_claimed(router)
    [lost] = claims(out)
    assert wire(router.shared_done(lost.op_id, False, None, due + 1)) == []
