"""Queues shared through a backend, in the core (core/shared_queues.py), without Redis:
what each step asks of the backend, and what the core does with its answers."""

from __future__ import annotations

import heapq
import json
from typing import Any

import pytest

from iii_daemon.core.effects import Emit, Persist, SharedOp
from iii_daemon.core.queues import Message
from iii_daemon.core.router import Router
from iii_daemon.core.shared import SharedOps
from iii_daemon.core.shared_queues import HOLD_FACTOR, SharedQueues, lane_key, split_lane
from iii_sdk import protocol as p

WALL = 1_700_000_000.0
LANE = lane_key("jobs", "job")


class Cluster:
    """One daemon's router on a shared backend whose answers the test gives."""

    def __init__(self, queues: dict[str, dict[str, Any]] | None = None) -> None:
        self.router = Router(shared=SharedOps("redis://h:6379/0"), queues=queues,
                             call_timeout_ms=60_000)
        self.now = 100.0
        self.router.start(self.now, WALL)
        self.ops: list[SharedOp] = []
        for conn in (1, 2):
            self.router.connect(conn, "unix", WALL)
        self.send(1, {"type": "registerfunction", "id": "job"})

    @property
    def queues(self) -> SharedQueues:
        assert isinstance(self.router.queues, SharedQueues)
        return self.router.queues

    def render(self, out: list[tuple[int, Any]]) -> list[tuple[int, dict[str, Any]]]:
        wire = []
        for conn, message in out:
            if isinstance(message, SharedOp):
                self.ops.append(message)
            elif not isinstance(message, Emit | Persist):
                wire.append((conn, json.loads(p.encode(message))))
        return wire

    def send(self, conn: int, message: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
        return self.render(self.router.handle(conn, p.decode(json.dumps(message).encode()),
                                              self.now))

    def op(self, kind: str) -> SharedOp:
        """The one operation of ``kind`` asked for since the last look (taken out)."""
        found = [o for o in self.ops if o.kind == kind]
        assert len(found) == 1, (kind, [o.kind for o in self.ops])
        self.ops.remove(found[0])
        return found[0]

    def answer(self, op: SharedOp, result: Any = None, error: str | None = None
               ) -> list[tuple[int, dict[str, Any]]]:
        return self.render(self.router.shared_done(op.op_id, result, error, self.now))

    def took(self, *entries: tuple[str, dict[str, Any]], attempts: bytes | None = None
             ) -> list[tuple[int, dict[str, Any]]]:
        take = self.op("queue_take")
        return self.answer(take, {"cursor": "0-0", "entries": [
            (entry, _stored(message), attempts) for entry, message in entries]})

    def advance(self, seconds: float) -> list[tuple[int, dict[str, Any]]]:
        self.now += seconds
        self.router.tick_clock(self.now, WALL + self.now - 100.0)
        return self.render(self.router.expire(self.now))


def _stored(message: dict[str, Any]) -> dict[str, bytes]:
    """A message as the backend hands it back (fields as bytes)."""
    return {"id": message["id"].encode(), "fn": b"job", "queue": b"jobs", "trigger": b"",
            "data": json.dumps(message["data"]).encode(), "attempts": b"0",
            "enq": repr(WALL).encode(), "err": b"", "route": b""}


@pytest.fixture
def cluster() -> Cluster:
    c = Cluster({"jobs": {"max_retries": 1, "backoff_ms": 100}})
    c.ops.clear()  # the first tick's
    return c


def invocations(out: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [m for conn, m in out if m["type"] == "invokefunction"]


def test_the_receipt_waits_for_the_backend_and_nothing_is_delivered_from_here(
        cluster: Cluster) -> None:
    out = cluster.send(2, {"type": "invokefunction", "function_id": "job", "data": {"n": 1},
                           "invocation_id": "c1",
                           "action": {"type": "enqueue", "queue": "jobs"}})
    assert out == []  # no receipt yet, and no delivery: the backend decides who
    put = cluster.op("queue_put")
    assert put.args["message"]["fn"] == "job" and put.args["message"]["route"] == ""
    [(conn, answer)] = cluster.answer(put, 1)
    assert conn == 2 and answer["result"]["messageReceiptId"] == put.args["message"]["id"]
    assert answer["result"]["function_served"] is True


def test_a_backend_that_is_away_gives_no_receipt(cluster: Cluster) -> None:
    cluster.send(2, {"type": "invokefunction", "function_id": "job", "invocation_id": "c1",
                     "action": {"type": "enqueue", "queue": "jobs"}})
    [(_, answer)] = cluster.answer(cluster.op("queue_put"), None, "unreachable since 10:00")
    assert answer["error"]["code"] == "backend_unavailable"
    assert "redis://h:6379/0: unreachable since 10:00" in answer["error"]["message"]


def test_an_announced_message_is_taken_delivered_and_acknowledged(cluster: Cluster) -> None:
    cluster.render(cluster.router.shared_queue_announced(LANE, cluster.now))
    take = cluster.ops[0]
    assert take.kind == "queue_take" and take.args["lane"] == LANE
    assert take.args["count"] == 20  # twice the concurrency, nothing held yet
    assert take.args["lease_ms"] == 0 and take.args["min_idle_ms"] == 61_000
    [call] = invocations(cluster.took(("1-0", {"id": "m1", "data": {"n": 1}})))
    assert call["function_id"] == "job" and call["data"] == {"n": 1}
    cluster.send(1, {"type": "invocationresult", "invocation_id": call["invocation_id"],
                     "function_id": "job", "result": None})
    ack = cluster.op("queue_ack")
    assert ack.args == {"lane": LANE, "entries": ["1-0"]}


def test_failures_are_retried_here_then_dead_in_the_backend(cluster: Cluster) -> None:
    cluster.render(cluster.router.shared_queue_announced(LANE, cluster.now))
    [call] = invocations(cluster.took(("1-0", {"id": "m1", "data": 1})))
    error = {"code": "boom", "message": "no"}
    cluster.send(1, {"type": "invocationresult", "invocation_id": call["invocation_id"],
                     "function_id": "job", "error": error})
    attempt = cluster.op("queue_attempt")  # kept here for its retry; the attempt written
    assert attempt.args["attempts"] == 1 and attempt.args["entry"] == "1-0"
    # The tick tells the backend the entry is still held here (nobody else claims it).
    cluster.advance(0.05)
    tick = cluster.op("queue_tick")
    assert tick.args["hold"] == [[LANE, ["1-0"], 0]] and tick.args["functions"] == ["job"]
    cluster.answer(tick, {"lanes": [LANE], "lost": {}, "queued": 1, "dead": 0,
                          "serving": ["job"], "known": True})
    [again] = invocations(cluster.advance(0.1))  # backoff 100 ms
    cluster.send(1, {"type": "invocationresult", "invocation_id": again["invocation_id"],
                     "function_id": "job", "error": error})
    dead = cluster.op("queue_dead")
    assert dead.args["entry"] == "1-0" and dead.args["message"]["attempts"] == 2
    assert json.loads(dead.args["message"]["err"]) == error


def test_a_held_message_another_daemon_took_over_is_dropped_here(cluster: Cluster) -> None:
    cluster.send(1, {"type": "unregisterfunction", "id": "job"})  # held, not delivered
    cluster.send(1, {"type": "registerfunction", "id": "job"})
    cluster.render(cluster.router.shared_queue_announced(LANE, cluster.now))
    cluster.ops = [o for o in cluster.ops if o.kind == "queue_take"]
    lane = cluster.queues.lanes[split_lane(LANE)]
    lane.policy = type(lane.policy)(concurrency=1)  # one in flight, one ready
    out = cluster.took(("1-0", {"id": "m1", "data": 1}), ("2-0", {"id": "m2", "data": 2}))
    assert len(invocations(out)) == 1 and [m.entry for m in lane.ready] == ["2-0"]
    cluster.advance(0.6)
    tick = cluster.op("queue_tick")
    cluster.answer(tick, {"lanes": [LANE], "lost": {LANE: ["2-0"]}, "queued": 2,
                          "dead": 0, "serving": [], "known": True})
    assert not lane.ready  # another daemon delivers it now
    assert cluster.router.services.queues.count() == 2  # the backend's totals


def test_a_fifo_lane_is_taken_under_a_lease() -> None:
    fifo = Cluster({"jobs": {"type": "fifo"}})
    fifo.ops.clear()
    fifo.render(fifo.router.shared_queue_announced(LANE, fifo.now))
    assert fifo.op("queue_take").args["lease_ms"] > 0


def test_a_topic_message_is_routed_by_the_backend(cluster: Cluster) -> None:
    cluster.send(2, {"type": "invokefunction", "function_id": "enqueue", "invocation_id": "e",
                     "data": {"topic": "news", "data": {"x": 1}, "delay_ms": 500}})
    put = cluster.op("queue_put")
    assert put.args["message"]["route"] == "1" and put.args["message"]["fn"] == ""
    assert put.args["due_ms"] - put.args["now_ms"] == 500
    [(_, answer)] = cluster.answer(put, 1)
    assert answer.get("result") is None and answer.get("error") is None
    assert answer["invocation_id"] == "e"


def test_a_daemon_holds_a_bounded_number_of_retries(cluster: Cluster) -> None:
    """A lane whose messages all fail is not drained into one daemon's retries: past
    HOLD_FACTOR times the concurrency held, it takes no more."""
    lane = cluster.queues._local_lane("jobs", "job")
    lane.policy = type(lane.policy)(concurrency=1)
    for n in range(HOLD_FACTOR):  # retries waiting an hour each
        cluster.queues._place(lane, Message(f"m{n}", "jobs", "job", b"1", 1,
                                            WALL + 3600, WALL, None, None, entry=f"{n}-0"))
    cluster.render(cluster.router.shared_queue_announced(LANE, cluster.now))
    assert [o for o in cluster.ops if o.kind == "queue_take"] == []
    heapq.heappop(lane.delayed)  # one retry fewer: room for one more
    cluster.render(cluster.router.shared_queue_announced(LANE, cluster.now))
    assert cluster.op("queue_take").args["count"] == 1
