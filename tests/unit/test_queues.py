"""Durable queues in the core, without I/O: protocol.md § Queues."""

from __future__ import annotations

from typing import Any

import pytest

from iii_daemon.core.router import Router
from tests.unit.test_router import Core, result
from tests.unit.test_triggers import WALL, events, invocations, reg

HOUR = 3600.0


@pytest.fixture
def core() -> Core:
    c = Core()
    c.router = Router(call_timeout_ms=60_000,
                      queues={"fast": {"max_retries": 2, "backoff_ms": 100}})
    c.router.start(c.now, WALL)
    c.connect(1)  # worker
    c.connect(2)  # caller
    return c


def enqueue(core: Core, function_id: str, data: Any, queue: str = "jobs",
            invocation_id: str = "q") -> list[tuple[int, Any]]:
    return core.call(2, function_id, data, invocation_id=invocation_id,
                     action={"type": "enqueue", "queue": queue})


def answer_of(out: list[tuple[int, Any]], invocation_id: str) -> dict[str, Any]:
    [found] = [m for c, m in out if c == 2 and m.get("invocation_id") == invocation_id]
    return found  # type: ignore[no-any-return]


def test_the_receipt_comes_once_the_message_is_on_disk(core: Core) -> None:
    core.register(1, "job")
    core.disk.holding = True
    assert enqueue(core, "job", {"n": 1}) == []  # no receipt, no delivery yet
    out = core.land()
    receipt = answer_of(out, "q")["result"]["messageReceiptId"]
    [delivered] = invocations(out)
    assert delivered["data"] == {"n": 1} and list(core.disk.messages) == [receipt]
    core.send(1, result(delivered["invocation_id"], result="done"))
    core.land()
    assert core.disk.messages == {}  # acknowledged: gone


def test_a_message_for_a_function_nobody_serves_waits_without_an_attempt(core: Core) -> None:
    enqueue(core, "later", {"n": 1})
    assert core.router.queues.describe()[0]["waiting_for_function"] == 1
    out = core.register(1, "later")
    [delivered] = invocations(out)
    assert delivered["function_id"] == "later"
    assert next(iter(core.disk.messages.values())).attempts == 0


def test_failures_retry_with_backoff_then_become_dead_letters(core: Core) -> None:
    core.register(1, "job")
    core.router.tick_clock(core.now, WALL)
    [first] = invocations(enqueue(core, "job", {"n": 1}))
    delays = []
    message, wall = first, WALL
    for attempt in range(1, 5):
        out = core.send(1, result(message["invocation_id"], error={"code": "boom",
                                                                   "message": f"#{attempt}"}))
        if attempt == 4:
            break
        [retry] = [e for e in events(core, "queue.retry") if e["attempt"] == attempt]
        delays.append(round(retry["at"] - wall, 3))
        assert invocations(out) == []  # not before its time
        wall = retry["at"]
        core.router.tick_clock(core.now, wall)
        [message] = invocations(core._render(core.router.expire(core.now)))
    assert delays == [1.0, 2.0, 4.0]  # 1 000 ms x 2^(n-1)
    [dead] = core.router.queues.dead_letters("jobs")
    assert dead["attempts"] == 4 and dead["last_error"] == {"code": "boom", "message": "#4"}
    assert dead["payload"] == {"n": 1}
    assert next(iter(core.disk.messages.values())).dead
    assert len(events(core, "queue.dead_letter")) == 1
    # Redrive: back for delivery with its attempts reset.
    out = core.call(2, "engine::queues::redrive", {"queue": "jobs"}, invocation_id="r")
    assert answer_of(out, "r")["result"] == {"redriven": 1, "left": 0}
    assert len(invocations(out)) == 1
    assert core.router.queues.dead_letters("jobs") == []


def test_config_overrides_the_defaults_and_a_timeout_is_an_attempt(core: Core) -> None:
    core.register(1, "job")
    core.router.tick_clock(core.now, WALL)
    invocations(enqueue(core, "job", 1, queue="fast"))
    for _ in range(3):  # max_retries 2: three attempts, each timing out
        core.router.tick_clock(core.now, WALL + HOUR)
        core.advance(61)  # the call timeout (60 s) ends the attempt
        core.router.tick_clock(core.now, WALL + 2 * HOUR)
        core._render(core.router.expire(core.now))
    [dead] = core.router.queues.dead_letters("fast")
    assert dead["attempts"] == 3 and dead["last_error"]["code"] == "TIMEOUT"


def test_concurrency_bounds_the_messages_in_flight(core: Core) -> None:
    core.register(1, "job")
    delivered = []
    for i in range(15):
        delivered += invocations(enqueue(core, "job", i, invocation_id=f"q{i}"))
    assert len(delivered) == 10  # the default concurrency
    out = core.send(1, result(delivered[0]["invocation_id"], result=None))
    assert [m["data"] for m in invocations(out)] == [10]


def test_fifo_queues_keep_order_per_group_through_retries() -> None:
    core = Core()
    core.router = Router(queues={"orders": {"type": "fifo",
                                            "message_group_field": "customer"}})
    core.router.start(core.now, WALL)
    core.connect(1)
    core.connect(2)
    core.register(1, "ship")
    first = invocations(enqueue(core, "ship", {"customer": "a", "n": 1}, "orders", "1"))
    first += invocations(enqueue(core, "ship", {"customer": "a", "n": 2}, "orders", "2"))
    first += invocations(enqueue(core, "ship", {"customer": "b", "n": 1}, "orders", "3"))
    assert [m["data"] for m in first] == [{"customer": "a", "n": 1},
                                          {"customer": "b", "n": 1}]
    out = core.send(1, result(first[0]["invocation_id"], error={"code": "x", "message": "y"}))
    assert invocations(out) == []  # a's second waits behind a's first (retrying)
    core.router.tick_clock(core.now, WALL + 10)
    [again] = invocations(core._render(core.router.expire(core.now)))
    assert again["data"] == {"customer": "a", "n": 1}
    out = core.send(1, result(again["invocation_id"], result=None))
    assert [m["data"] for m in invocations(out)] == [{"customer": "a", "n": 2}]


def test_topic_messages_reach_every_queue_trigger_with_the_bare_data(core: Core) -> None:
    for function_id in ("audit", "mail"):
        core.register(1, function_id)
        reg(core, id=f"on-{function_id}", type="queue", function_id=function_id,
            config={"topic": "order.placed", "queue_config": {"maxRetries": 0}})
    core.disk.holding = True
    assert core.call(2, "enqueue", {"topic": "order.placed", "data": {"id": 7}},
                     invocation_id="e") == []
    out = core.land()
    assert "error" not in answer_of(out, "e") and answer_of(out, "e").get("result") is None
    assert sorted((m["function_id"], m["data"]["id"]) for m in invocations(out)) == [
        ("audit", 7), ("mail", 7)]
    rows = {row["function_id"]: row for row in core.router.queues.describe()}
    assert rows["mail"]["queue"] == "order.placed" and rows["mail"]["in_flight"] == 1


@pytest.mark.parametrize("data, code", [
    ({"data": 1}, "topic_not_set"),
    ({"topic": "", "data": 1}, "topic_not_set"),
    ({"topic": "t", "delay_ms": 2**31}, "delay_too_large"),
    ({"topic": "t", "delay_ms": -1}, "bad_request"),
])
def test_enqueue_refuses_what_upstream_refuses(core: Core, data: dict[str, Any],
                                               code: str) -> None:
    [(_, answer)] = core.call(2, "enqueue", data, invocation_id="e")
    assert answer["error"]["code"] == code


def test_a_bad_queue_config_is_refused_at_registration(core: Core) -> None:
    answer = reg(core, type="queue", function_id="f",
                 config={"topic": "t", "queue_config": {"maxRetries": "three"}})
    assert answer["error"]["code"] == "bad_request" and "maxRetries" in \
        answer["error"]["message"]


def test_delayed_topic_messages_wait_for_their_time(core: Core) -> None:
    core.register(1, "job")
    reg(core, id="t", type="queue", function_id="job", config={"topic": "later"})
    core.router.tick_clock(core.now, WALL)
    out = core.call(2, "enqueue", {"topic": "later", "data": 1, "delay_ms": 5_000},
                    invocation_id="e")
    assert invocations(out) == []
    assert core.router.next_deadline() == pytest.approx(core.now + 5.0)
    core.router.tick_clock(core.now, WALL + 5)
    assert len(invocations(core._render(core.router.expire(core.now)))) == 1


def test_a_queue_trigger_condition_gates_each_message(core: Core) -> None:
    core.register(1, "job")
    core.register(1, "gate")
    reg(core, id="t", type="queue", function_id="job",
        config={"topic": "t", "condition_function_id": "gate"})
    [asked] = invocations(core.call(2, "enqueue", {"topic": "t", "data": 1},
                                    invocation_id="e"))
    assert asked["function_id"] == "gate"
    out = core.send(1, result(asked["invocation_id"], result=False))
    assert invocations(out) == [] and core.disk.messages == {}  # skipped, acknowledged
    assert events(core, "trigger.skipped")[-1]["trigger_type"] == "queue"


def test_undelivered_messages_are_delivered_again_after_a_restart(core: Core) -> None:
    core.register(1, "job")
    sent = invocations(enqueue(core, "job", {"n": 1}, invocation_id="a"))
    enqueue(core, "elsewhere", {"n": 2}, invocation_id="b")
    assert len(sent) == 1  # in flight when the daemon "dies"
    again = Core()
    again.router.start(again.now, WALL, core.disk.stored())
    again.connect(1)
    out = again.register(1, "job") + again.register(1, "elsewhere")
    assert sorted(m["data"]["n"] for m in invocations(out)) == [1, 2]


def test_a_failed_write_gives_no_receipt_and_delivers_nothing(core: Core) -> None:
    core.register(1, "job")
    core.disk.failing = "store write failed: database or disk is full"
    out = enqueue(core, "job", 1)
    assert answer_of(out, "q")["error"] == {
        "code": "queue_error",
        "message": "not enqueued: store write failed: database or disk is full"}
    assert invocations(out) == [] and core.router.queues.count() == 0
    core.disk.failing = None
    [(_, pong)] = core.send(2, {"type": "ping"})  # what needs no disk goes on
    assert pong["type"] == "pong"


def test_purge_drops_waiting_messages_and_dead_letters(core: Core) -> None:
    for i in range(3):
        enqueue(core, "nobody", i, invocation_id=f"q{i}")
    out = core.call(2, "engine::queues::purge", {"queue": "jobs"}, invocation_id="p")
    assert answer_of(out, "p")["result"] == {"purged": 3, "left": 0}
    assert core.disk.messages == {} and core.router.queues.count() == 0


def test_purge_and_redrive_go_in_steps_of_limit(core: Core) -> None:
    """``limit``: a CLI goes step by step (showing progress), the daemon never long."""
    for i in range(5):
        enqueue(core, "nobody", i, invocation_id=f"q{i}")
    out = core.call(2, "engine::queues::purge", {"queue": "jobs", "limit": 2},
                    invocation_id="p1")
    assert answer_of(out, "p1")["result"] == {"purged": 2, "left": 3}
    assert core.router.queues.count() == 3 and len(core.disk.messages) == 3
    out = core.call(2, "engine::queues::purge", {"queue": "jobs", "limit": 10},
                    invocation_id="p2")
    assert answer_of(out, "p2")["result"] == {"purged": 3, "left": 0}
    bad = core.call(2, "engine::queues::redrive", {"queue": "jobs", "limit": 0},
                    invocation_id="r")
    assert answer_of(bad, "r")["error"]["code"] == "bad_request"


def test_a_missing_condition_is_a_failed_attempt_not_a_wait(core: Core) -> None:
    core.register(1, "job")
    reg(core, id="t", type="queue", function_id="job",
        config={"topic": "t", "condition_function_id": "no::such::gate",
                "queue_config": {"maxRetries": 0}})
    out = core.call(2, "enqueue", {"topic": "t", "data": 1}, invocation_id="e")
    assert invocations(out) == []
    [dead] = core.router.queues.dead_letters("t")
    assert dead["last_error"]["code"] == "function_not_found"
    assert "condition 'no::such::gate' failed" in dead["last_error"]["message"]


def test_purged_delayed_messages_wake_nobody(core: Core) -> None:
    core.register(1, "job")
    reg(core, id="t", type="queue", function_id="job", config={"topic": "later"})
    core.router.tick_clock(core.now, WALL)
    core.call(2, "enqueue", {"topic": "later", "data": 1, "delay_ms": 5_000},
              invocation_id="e")
    assert core.router.queues.next_due() == pytest.approx(WALL + 5)
    core.call(2, "engine::queues::purge", {"queue": "later"}, invocation_id="p")
    assert core.router.queues.next_due() is None and core.router.next_deadline() is None


@pytest.mark.parametrize("action", [{"type": "enqueue"}, {"type": "enqueue", "queue": ""},
                                    {"type": "enqueue", "queue": 7},
                                    {"type": "enqueue", "queue": "bad\x1bname"}])
def test_a_bad_queue_name_is_a_bad_request(core: Core, action: dict[str, Any]) -> None:
    [(_, answer)] = core.call(2, "job", 1, invocation_id="q", action=action)
    assert answer["error"]["code"] == "bad_request" and core.router.queues.count() == 0


def paced_core(concurrency: int = 10) -> Core:
    core = Core()
    core.router = Router(paced_queues=True, queues={
        "a": {"concurrency": concurrency}, "b": {"concurrency": concurrency}})
    core.router.start(core.now, WALL)
    core.connect(1)
    core.connect(2)
    return core


def test_paced_queues_deliver_only_when_the_driver_pumps() -> None:
    core = paced_core()
    core.register(1, "job")
    out = enqueue(core, "job", 1, "a")
    assert answer_of(out, "q")["result"]["messageReceiptId"] and invocations(out) == []
    assert core.router.queues.dirty  # the driver's cue to pump
    [delivery] = invocations(core._render(core.router.pump_queues(core.now)))
    assert delivery["data"] == 1
    # A retry that comes due is released by the timer, and delivered by the next pump.
    core.send(1, result(delivery["invocation_id"], error={"code": "x", "message": "y"}))
    core.router.tick_clock(core.now, WALL + 10)
    assert invocations(core.advance(0)) == []
    [again] = invocations(core._render(core.router.pump_queues(core.now)))
    assert again["data"] == 1


def test_a_limited_pump_goes_on_where_it_stopped_and_starves_no_lane() -> None:
    core = paced_core(concurrency=100)
    core.register(1, "job")
    for queue in ("a", "b"):
        for i in range(10):
            enqueue(core, "job", f"{queue}{i}", queue, invocation_id=f"{queue}{i}")
    turns = [[m["data"] for m in invocations(core._render(core.router.pump_queues(
        core.now, limit=4)))] for _ in range(4)]
    # Each lane in its turn, in order: a cut-short lane goes after the ones not reached.
    assert turns == [["a0", "a1", "a2", "a3"], ["b0", "b1", "b2", "b3"],
                     ["a4", "a5", "a6", "a7"], ["b4", "b5", "b6", "b7"]]
    rest = invocations(core._render(core.router.pump_queues(core.now)))  # no limit
    assert sorted(m["data"] for m in rest) == ["a8", "a9", "b8", "b9"]
    assert not core.router.queues.dirty


def bind(core: Core, trigger_id: str, function_id: str, config: dict[str, Any]
         ) -> list[tuple[int, Any]]:
    """A queue trigger the worker (connection 1) registers; what the core sends."""
    return core.send(1, {"type": "registertrigger", "id": trigger_id, "trigger_type": "queue",
                         "function_id": function_id, "config": config})


def test_a_topic_nobody_consumes_yet_keeps_its_messages_for_the_first_consumer(
        core: Core) -> None:
    """Issue: `enqueue {topic}` with no queue trigger answered null and lost the message."""
    core.disk.holding = True
    assert core.call(2, "enqueue", {"topic": "signups", "data": {"n": 1}},
                     invocation_id="e") == []
    out = core.land()  # the answer waits for the disk, as for any other enqueue
    assert answer_of(out, "e").get("result") is None and "error" not in answer_of(out, "e")
    [row] = core.router.queues.describe()
    assert row["queue"] == "signups" and row["function_id"] is None
    assert row["waiting_for_function"] == 1 and core.router.queues.count() == 1
    core.disk.holding = False
    core.register(1, "welcome")
    out = bind(core, "first", "welcome", {"topic": "signups"})
    [delivered] = invocations(out)
    assert delivered["function_id"] == "welcome" and delivered["data"] == {"n": 1}
    [stored] = core.disk.messages.values()  # a restart would know whose it is now
    assert stored.function_id == "welcome" and stored.trigger_id == "first"
    # A consumer bound later gets only what is enqueued after it bound.
    core.register(1, "audit")
    assert invocations(bind(core, "second", "audit", {"topic": "signups"})) == []
    out = core.call(2, "enqueue", {"topic": "signups", "data": {"n": 2}}, invocation_id="f")
    assert sorted(m["function_id"] for m in invocations(out)) == ["audit", "welcome"]


def test_a_waiting_topic_message_survives_a_restart_and_reaches_a_consumer(
        core: Core) -> None:
    core.call(2, "enqueue", {"topic": "signups", "data": {"n": 1}, "delay_ms": 0},
              invocation_id="e")
    again = Core()
    again.router.start(again.now, WALL, core.disk.stored())
    assert again.router.queues.count() == 1
    again.connect(1)
    again.register(1, "welcome")
    out = bind(again, "t", "welcome", {"topic": "signups",
                                       "queue_config": {"maxRetries": 0}})
    assert [m["data"] for m in invocations(out)] == [{"n": 1}]


def test_a_consumer_that_binds_while_the_write_is_in_flight_still_gets_it(
        core: Core) -> None:
    core.disk.holding = True
    core.call(2, "enqueue", {"topic": "signups", "data": 1}, invocation_id="e")
    core.register(1, "welcome")
    bind(core, "t", "welcome", {"topic": "signups"})
    core.disk.holding = False
    out = core.land()
    assert [m["data"] for m in invocations(out)] == [1]
