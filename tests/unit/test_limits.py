"""Bounds of the core, without sockets: ids, timeouts, deadlines, schedules that end,
firings that would pile up, stored rows that cannot load."""

from __future__ import annotations

import pytest

from iii_daemon.core.effects import Emit
from iii_daemon.core.invocations import Invocation, InvocationTable
from iii_daemon.core.router import Router
from iii_sdk import protocol as p
from iii_sdk.limits import MAX_TIMEOUT_MS
from tests.unit.test_router import Core, result, routed
from tests.unit.test_triggers import WALL, events, invocations, reg


@pytest.fixture
def core() -> Core:
    c = Core()
    c.router = Router(call_timeout_ms=60_000)
    c.router.start(c.now, WALL)
    c.connect(1)  # worker
    c.connect(2)  # caller
    c.register(1, "job")
    return c


# --- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["esc\x1b[2J", "bell\x07", "del\x7f", "csi\x9b", "rtl\u202e",
                                 "line\u2028", ""])
def test_ids_with_control_characters_are_refused_everywhere(core: Core, bad: str) -> None:
    [(_, refused)] = core.register(2, bad)
    assert refused["type"] == "error" and refused["code"] == "bad_request"
    assert refused["request_type"] == "registerfunction" and refused["request_id"] == bad
    assert bad not in core.router.registry.functions
    [(_, refused)] = core.send(2, {"type": "registeractiontype", "id": bad,
                                   "function_id": "job"})
    assert refused["request_type"] == "registeractiontype"
    [(_, refused)] = core.send(2, {"type": "registertriggertype", "id": bad})
    assert refused["request_type"] == "registertriggertype"
    for field in ("id", "function_id"):
        request = {"id": "t", "type": "subscribe", "function_id": "job",
                   "config": {"topic": "x"}, field: bad}
        assert reg(core, **request)["error"]["code"] == "bad_request"
    condition = {"topic": "x", "condition_function_id": bad}
    assert reg(core, type="subscribe", function_id="job", config=condition)["error"]["code"] \
        == "bad_request"
    assert core.router.triggers.bindings == {}


def test_printable_unicode_ids_are_fine(core: Core) -> None:
    assert core.register(2, "größe::λ") == []
    assert "größe::λ" in core.router.registry.functions


# --- timeouts and deadlines -------------------------------------------------------------------


@pytest.mark.parametrize("timeout_ms", [0, -1, MAX_TIMEOUT_MS + 1, 10**18])
def test_timeout_ms_out_of_range_is_a_bad_request(core: Core, timeout_ms: int) -> None:
    [(_, answer)] = core.call(2, "job", invocation_id="c", timeout_ms=timeout_ms)
    assert answer["error"]["code"] == "bad_request"
    assert len(core.router.invocations) == 0


def test_the_longest_timeout_is_accepted(core: Core) -> None:
    routed(core.call(2, "job", invocation_id="c", timeout_ms=MAX_TIMEOUT_MS))
    assert core.router.next_deadline() == pytest.approx(core.now + MAX_TIMEOUT_MS / 1000)


def test_void_calls_to_a_silent_worker_end_at_the_default_deadline(core: Core) -> None:
    for _ in range(100):
        routed(core.call(2, "job", action={"type": "void"}))
    core.advance(30)
    routed(core.call(2, "job", action={"type": "void"}))
    assert len(core.router.invocations) == 101
    assert core.router.next_deadline() == pytest.approx(core.now - 30 + 60)
    assert core.advance(30.001) == []  # nobody to tell
    assert len(core.router.invocations) == 1
    assert core.router.registry.connections[1].serving != set()
    core.advance(30)
    assert len(core.router.invocations) == 0
    assert core.router.registry.connections[1].serving == set()
    assert core.router.next_deadline() is None


def test_a_sync_call_without_timeout_gets_timeout_at_the_default_deadline(core: Core) -> None:
    routed(core.call(2, "job", invocation_id="c"))
    [(caller, answer)] = core.advance(60.001)
    assert caller == 2 and answer["error"]["code"] == "TIMEOUT"
    assert "60000 ms" in answer["error"]["message"]


def _track(table: InvocationTable, name: str, deadline: float, timeout_ms: int) -> None:
    table.add(Invocation(id=name, function_id="f", worker=1, caller=None,
                         caller_invocation_id=None, started=deadline - timeout_ms / 1000,
                         timeout_ms=timeout_ms, deadline=deadline))


def test_a_timeout_lane_does_not_keep_answered_calls() -> None:
    table = InvocationTable()
    for i in range(10_000):
        _track(table, str(i), i + 300.0, 300_000)
        table.pop(str(i))
    assert sum(map(len, table._lanes.values())) <= InvocationTable._COMPACT_MIN + 2
    assert table.next_deadline() is None
    assert table._lanes == {}  # an emptied lane goes


def test_deadlines_of_every_timeout_expire_in_time_order() -> None:
    table = InvocationTable()
    _track(table, "default-1", 5.0, 300_000)
    _track(table, "explicit", 3.0, 1_000)
    _track(table, "default-2", 6.0, 300_000)
    _track(table, "out-of-order", 4.0, 300_000)  # a clock step back: to the heap
    assert table.next_deadline() == 3.0
    assert [i.id for i in table.pop_expired(5.5)] == ["explicit", "out-of-order",
                                                       "default-1"]
    assert table.next_deadline() == 6.0


def test_more_timeouts_than_lanes_still_expire_each_call_on_time() -> None:
    table = InvocationTable()
    count = 3 * InvocationTable.MAX_LANES
    for n in range(count):  # each its own timeout: most go to the heap
        _track(table, f"c{n}", 100.0 - n, 1_000 + n)
    assert len(table._lanes) == InvocationTable.MAX_LANES
    assert table.next_deadline() == 100.0 - (count - 1)
    expired = table.pop_expired(100.0)
    assert [i.id for i in expired] == [f"c{n}" for n in reversed(range(count))]
    assert table.next_deadline() is None and table._lanes == {}


# --- triggers ---------------------------------------------------------------------------------


def test_a_cron_whose_schedule_ends_stops_and_the_timer_goes_on(core: Core) -> None:
    # WALL is 2027-01-15T08:00:00Z: every second of that minute, in 2027 only... until
    # the minute is over, then next year's (none): ends after the last tick of 2027.
    core.router.tick_clock(core.now, 1_830_297_598.0)  # 2027-12-31T23:59:58Z
    reg(core, id="last", type="cron", function_id="job",
        config={"expression": "* * * * * * 2027"})
    routed(core.call(2, "job", invocation_id="sync", timeout_ms=10_000))
    fired = []
    for _ in range(4):
        fired += invocations(core.advance(1.0))
    assert len([m for m in fired if m["function_id"] == "job"]) == 1  # 23:59:59 only
    binding = core.router.triggers.bindings["last"]
    assert binding.status == "ended" and "no more times" in (binding.error or "")
    # The sync call's timeout is still enforced: the timer did not die with the schedule.
    timed_out = core.advance(10.0)
    assert any(m.get("invocation_id") == "sync" and m["error"]["code"] == "TIMEOUT"
               for _, m in timed_out)


def test_a_cron_tick_skips_while_its_last_firing_runs(core: Core) -> None:
    reg(core, id="tick", type="cron", function_id="job",
        config={"expression": "* * * * * *"})
    [first] = invocations(core.advance(1.0))
    assert invocations(core.advance(1.0)) == []
    assert invocations(core.advance(1.0)) == []
    skipped = events(core, "trigger.skipped")
    assert [e["reason"] for e in skipped] == ["still_running", "still_running"]
    core.send(1, result(first["invocation_id"], result=None))
    assert len(invocations(core.advance(1.0))) == 1  # back to firing


def test_a_skipped_condition_frees_the_slot(core: Core) -> None:
    core.register(1, "gate")
    reg(core, id="tick", type="cron", function_id="job",
        config={"expression": "* * * * * *", "condition_function_id": "gate"})
    [ask] = invocations(core.advance(1.0))
    assert ask["function_id"] == "gate"
    core.send(1, result(ask["invocation_id"], result=False))
    [again] = invocations(core.advance(1.0))
    assert again["function_id"] == "gate"


def test_state_triggers_fire_for_each_change_up_to_a_bound(core: Core) -> None:
    reg(core, id="s", type="state", function_id="job", config={"scope": "o"})
    fired = 0
    for i in range(1_005):
        out = core.call(2, "state::set", {"scope": "o", "key": "k", "value": i},
                        invocation_id=f"c{i}")
        fired += len(invocations(out))
    assert fired == 1_000  # a silent target: at most 1 000 wait, the rest skip
    assert len(events(core, "trigger.skipped")) == 5


def test_events_leave_the_core_as_effects_once_someone_watches(core: Core) -> None:
    """Every recorded event is also an Emit effect (what the hub fans out to watchers),
    the same object the history ring keeps; with nobody watching, only the ring."""
    reg(core, id="tick", type="cron", function_id="job",
        config={"expression": "* * * * * *"})
    core.router.tick_clock(core.now, WALL)
    out = core.router.expire(core.now + 1.0)
    assert not [m for c, m in out if isinstance(m, Emit)]
    assert core.router.events[-1]["event"] == "trigger.fired"
    core.connect(9)
    core.router.handle(9, p.decode(b'{"type":"watch","replay":0}'), core.now)
    out = core.router.expire(core.now + 2.0)  # the first firing still runs
    [skipped] = [m.as_dict() for c, m in out if isinstance(m, Emit)]
    assert skipped["event"] == "trigger.skipped" and skipped["reason"] == "still_running"
    assert skipped is core.router.events[-1]
    out = core.router.handle(2, p.decode(b'{"type":"registerfunction","id":"job"}'),
                             core.now)
    [refused] = [m.as_dict() for c, m in out if isinstance(m, Emit)]
    assert refused["event"] == "registration.refused" and refused["id"] == "job"
    out = core.router.handle(1, p.decode(
        b'{"type":"invokefunction","function_id":"engine::workers::register",'
        b'"data":{"name":"w"}}'), core.now)
    assert [m.as_dict()["event"] for c, m in out if isinstance(m, Emit)] == ["worker.joined"]
    out = core.router.disconnect(1)
    assert "worker.left" in [m.as_dict()["event"] for c, m in out if isinstance(m, Emit)]
