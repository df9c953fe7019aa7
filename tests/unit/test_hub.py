"""The hub's bounds, with fake links on an event loop that is never run: output budget,
parked bytes, errors contained to their message, a timer that survives its callbacks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from iii_daemon.core.router import Router
from iii_daemon.drivers.hub import Hub


class FakeLink:
    def __init__(self) -> None:
        self.conn_id = 0
        self.written = bytearray()
        self.unsent = 0  # what the transport would still hold
        self.paused = False
        self.closed = self.aborted = False

    def write(self, data: bytes | bytearray) -> None:
        self.written += data
        self.unsent += len(data)

    def write_buffer_size(self) -> int:
        return self.unsent

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self, restarting: bool = False) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in bytes(self.written).splitlines()]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def run_pending(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0))


def call(invocation_id: str, function_id: str = "engine::functions::list") -> bytes:
    return json.dumps({"type": "invokefunction", "function_id": function_id,
                       "invocation_id": invocation_id}).encode()


def test_a_connection_over_its_output_budget_is_not_read_until_it_drains(
        loop: asyncio.AbstractEventLoop) -> None:
    hub = Hub(Router(), loop, write_limit=10**9, output_budget=10_000)
    link = FakeLink()
    hub.attach(link, "unix")
    hub.receive(link.conn_id, [call(f"c{i}") for i in range(100)])
    answered = [m for m in link.messages() if m["type"] == "invocationresult"]
    answer_size = len(link.written) // max(len(answered), 1)
    assert 0 < len(answered) < 100 and len(link.written) <= 10_000 + 2 * answer_size
    assert link.paused
    more = call("late")
    hub.receive(link.conn_id, [more])  # a paused link's frames wait their turn
    hub.drained(link.conn_id)  # still over the budget: nothing happens
    assert len([m for m in link.messages() if m["type"] == "invocationresult"]) == \
        len(answered)
    while link.paused:
        link.unsent = 0  # the peer read everything
        hub.drained(link.conn_id)
    ids = [m["invocation_id"] for m in link.messages() if m["type"] == "invocationresult"]
    assert ids == [f"c{i}" for i in range(100)] + ["late"]  # all of them, in order


def test_output_to_others_only_yields_a_turn(loop: asyncio.AbstractEventLoop) -> None:
    hub = Hub(Router(), loop, write_limit=10**9, output_budget=2_000)
    worker, caller = FakeLink(), FakeLink()
    hub.attach(worker, "unix")
    hub.attach(caller, "unix")
    hub.receive(worker.conn_id, [b'{"type":"registerfunction","id":"f"}'])
    hub.receive(caller.conn_id, [call(f"c{i}", "f") for i in range(100)])
    assert caller.paused and len(worker.messages()) < 100
    for _ in range(100):
        run_pending(loop)  # the caller's own output is small: it goes on by itself
    assert not caller.paused
    assert len([m for m in worker.messages() if m["type"] == "invokefunction"]) == 100


def test_an_exception_costs_one_message_not_the_connection(
        loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    router = Router()
    hub = Hub(router, loop, write_limit=10**9)
    link = FakeLink()
    hub.attach(link, "unix")
    original = router.handle

    def flaky(conn_id: int, message: Any, now: float) -> Any:
        if getattr(message, "invocation_id", None) == "boom":
            raise RuntimeError("a daemon bug")
        return original(conn_id, message, now)

    monkeypatch.setattr(router, "handle", flaky)
    hub.receive(link.conn_id, [call("before"), call("boom"), call("after"),
                               b'{"type":"ping"}'])
    out = link.messages()[1:]
    assert [m.get("invocation_id") for m in out[:3]] == ["before", "boom", "after"]
    assert out[1]["error"]["code"] == "bad_frame" and "internal error" in \
        out[1]["error"]["message"]
    assert out[3] == {"type": "pong"}
    assert not (link.closed or link.aborted) and link.conn_id in hub.links


def test_the_timer_survives_a_failing_callback(loop: asyncio.AbstractEventLoop,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    router = Router()
    hub = Hub(router, loop, write_limit=10**9)
    monkeypatch.setattr(router, "next_deadline", lambda: loop.time() - 1)
    monkeypatch.setattr(router, "expire", lambda now: 1 / 0)
    hub.flush()
    timer = hub.deadlines
    assert timer._timer is not None
    timer._fire()  # raises inside; logged, not propagated
    assert timer._timer is not None  # armed again...
    assert timer._at is not None and timer._at >= loop.time() + 0.05  # ...not hot


def test_parked_bytes_are_capped_by_cutting_off_the_largest_holder(
        loop: asyncio.AbstractEventLoop) -> None:
    hub = Hub(Router(), loop, write_limit=10**9, parked_limit=1_000)
    small, large = FakeLink(), FakeLink()
    hub.attach(small, "unix")
    hub.attach(large, "unix")
    assert hub.parked(large.conn_id, 700)
    assert hub.parked(small.conn_id, 200)
    assert hub.parked(small.conn_id, 400)  # 1 100 in all: the larger one goes
    assert large.aborted and large.conn_id not in hub.links and not small.aborted
    assert hub.parked_total == 400
    assert not hub.parked(small.conn_id, 1_200)  # over the limit alone: itself
    assert small.aborted and hub.parked_total == 0


def test_a_link_that_is_not_reading_is_cut_off(loop: asyncio.AbstractEventLoop) -> None:
    hub = Hub(Router(), loop, write_limit=5_000)
    link = FakeLink()
    hub.attach(link, "unix")
    link.unsent = 6_000
    hub.receive(link.conn_id, [b'{"type":"ping"}'])
    assert link.aborted and link.conn_id not in hub.links


class HeldWriter:
    """A store writer that commits only when told (``land``)."""

    def __init__(self) -> None:
        self.queued: list[Any] = []

    def submit(self, persists: list[Any]) -> None:
        self.queued += persists

    def close(self) -> None:
        self.land()

    def land(self) -> None:
        for persist in self.queued:
            persist.done = True
        self.queued.clear()


def state_set(invocation_id: str, key: str) -> bytes:
    return json.dumps({"type": "invokefunction", "function_id": "state::set",
                       "invocation_id": invocation_id,
                       "data": {"scope": "s", "key": key, "value": 1}}).encode()


def test_answers_wait_for_their_writes_and_writers_wait_for_the_store(
        loop: asyncio.AbstractEventLoop) -> None:
    writer = HeldWriter()
    hub = Hub(Router(), loop, write_limit=10**9, writer=writer, writes_limit=10)
    writing, other = FakeLink(), FakeLink()
    hub.attach(writing, "unix")
    hub.attach(other, "unix")
    hub.receive(writing.conn_id, [state_set(f"s{i}", f"k{i}") for i in range(30)])
    # Written, not committed: no answer yet, and past the limit the writer is not read.
    assert len(writer.queued) == 11 and writing.paused
    assert not [m for m in writing.messages() if m["type"] == "invocationresult"]
    hub.receive(other.conn_id, [call("ping-like")])  # nobody else waits for the store
    assert [m["invocation_id"] for m in other.messages()[1:]] == ["ping-like"]
    while writing.paused or writer.queued:
        writer.land()
        hub.writes.landed()
    ids = [m["invocation_id"] for m in writing.messages() if m["type"] == "invocationresult"]
    assert ids == [f"s{i}" for i in range(30)]  # all, in order


def test_without_a_store_writes_fail_and_say_so(loop: asyncio.AbstractEventLoop) -> None:
    hub = Hub(Router(), loop, write_limit=10**9)
    link = FakeLink()
    hub.attach(link, "unix")
    hub.receive(link.conn_id, [state_set("s", "k")])
    run_pending(loop)
    [answer] = [m for m in link.messages() if m["type"] == "invocationresult"]
    assert answer["error"] == {"code": "invocation_failed",
                               "message": "this daemon has no store"}


def test_a_slow_burst_gives_others_a_turn_after_its_time_budget(
        loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames costly to handle yield long before FRAMES_PER_TURN: once the turn has taken
    TURN_BUDGET_S (checked every 32 frames), another connection goes first."""
    from iii_daemon.drivers import hub as hub_module

    monkeypatch.setattr(hub_module, "TURN_BUDGET_S", 0.0)  # every frame "slow"
    writer = HeldWriter()
    hub = Hub(Router(), loop, write_limit=10**9, writer=writer)
    burst, other = FakeLink(), FakeLink()
    hub.attach(burst, "unix")
    hub.attach(other, "unix")
    hub.receive(burst.conn_id, [state_set(f"s{i}", "k") for i in range(100)])
    assert burst.paused and len(writer.queued) == 32  # one check's worth, then a turn
    hub.receive(other.conn_id, [b'{"type":"ping"}'])
    assert other.messages()[-1]["type"] == "pong"
    for _ in range(20):
        run_pending(loop)
    assert not burst.paused and len(writer.queued) == 100


def test_a_long_burst_gives_others_a_turn(loop: asyncio.AbstractEventLoop) -> None:
    """Frames that make little output (writes, voids) still yield after FRAMES_PER_TURN:
    another connection's ping is answered before the burst is done."""
    from iii_daemon.drivers.hub import FRAMES_PER_TURN

    writer = HeldWriter()
    hub = Hub(Router(), loop, write_limit=10**9, writer=writer)
    burst, other = FakeLink(), FakeLink()
    hub.attach(burst, "unix")
    hub.attach(other, "unix")
    frames = [state_set(f"s{i}", "k") for i in range(3 * FRAMES_PER_TURN)]
    hub.receive(burst.conn_id, frames)
    assert burst.paused  # a turn ended; the rest waits for the loop to come round
    hub.receive(other.conn_id, [b'{"type":"ping"}'])
    assert other.messages()[-1]["type"] == "pong"
    for _ in range(10):
        run_pending(loop)
    assert not burst.paused  # and the burst went on by itself, every frame of it
    assert len(writer.queued) == 3 * FRAMES_PER_TURN


def deliveries(link: FakeLink) -> list[Any]:
    return [m["data"] for m in link.messages()
            if m["type"] == "invokefunction" and m["function_id"] == "job"]


def backlog_hub(loop: asyncio.AbstractEventLoop) -> tuple[Hub, FakeLink, FakeLink]:
    """A paced hub with 100 messages for ``job`` on disk, a worker serving ``job`` and
    ``echo``, and a caller."""
    writer = HeldWriter()
    hub = Hub(Router(paced_queues=True, queues={"jobs": {"concurrency": 1000}}), loop,
              write_limit=10**9, writer=writer)
    worker, caller = FakeLink(), FakeLink()
    hub.attach(worker, "unix")
    hub.attach(caller, "unix")
    hub.receive(caller.conn_id, [json.dumps({
        "type": "invokefunction", "function_id": "job", "data": i,
        "action": {"type": "enqueue", "queue": "jobs"}}).encode() for i in range(100)])
    writer.land()
    hub.writes.landed()
    hub.receive(worker.conn_id, [b'{"type":"registerfunction","id":"job"}',
                                 b'{"type":"registerfunction","id":"echo"}'])
    return hub, worker, caller


def test_a_backlog_drains_at_full_speed_when_no_calls_come(
        loop: asyncio.AbstractEventLoop) -> None:
    _, worker, _ = backlog_hub(loop)
    assert deliveries(worker) == []  # after the turn's input, not inside it
    run_pending(loop)
    assert deliveries(worker) == list(range(100))


def test_a_backlog_takes_a_share_while_calls_are_routed(
        loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    from iii_daemon.drivers import hub_timers as hub_module

    # Long enough that no pause ends, and no call goes stale, while the test runs.
    monkeypatch.setattr(hub_module, "QUEUE_YIELD_S", 60.0)
    monkeypatch.setattr(hub_module, "BUSY_WINDOW_S", 60.0)
    hub, worker, caller = backlog_hub(loop)
    hub.receive(caller.conn_id, [call("c1", "echo")])  # a routed call: foreground work
    [routed] = [m for m in worker.messages() if m["type"] == "invokefunction"]
    assert routed["function_id"] == "echo"  # the call went at once
    for _ in range(3):
        run_pending(loop)
    assert len(deliveries(worker)) == hub_module.QUEUE_SHARE  # then a pause
    pacer = hub.queue_pacer
    assert isinstance(pacer._pump, asyncio.TimerHandle)
    pacer._last_call_at = -1e9  # no call for a while: full speed again
    pacer._pump.cancel()
    pacer._pump = None
    hub.flush()
    run_pending(loop)
    assert deliveries(worker) == list(range(100))
