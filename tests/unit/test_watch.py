"""Watching in the core and the hub, without sockets: filters, replay, the fields of an
invocation's event, per-function stats, and a slow watcher's missed marker."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iii_daemon.core.effects import Emit
from iii_daemon.core.event_log import PREVIEW_BYTES
from iii_daemon.core.router import Router
from iii_daemon.core.stats import FunctionStats
from iii_daemon.drivers.hub import Hub
from iii_sdk import protocol as p
from tests.unit.test_hub import FakeLink, call
from tests.unit.test_router import Core, result


@pytest.fixture
def core() -> Core:
    c = Core()
    c.connect(1)  # worker
    c.connect(2)  # caller
    c.connect(3)  # watcher
    c.register(1, "orders::create")
    c.register(1, "mail::send")
    return c


def watch(core: Core, conn_id: int = 3, **message: Any) -> list[dict[str, Any]]:
    out = core.router.handle(conn_id, p.decode(json.dumps({"type": "watch", **message})),
                             core.now)
    return [m.as_dict() for c, m in out if isinstance(m, Emit) and m.to == conn_id]


def emitted(out: list[tuple[int, Any]]) -> list[dict[str, Any]]:
    return [m.as_dict() for _, m in out if isinstance(m, Emit)]


def call_and_answer(core: Core, function_id: str, data: Any, **answer: Any) -> None:
    [(_, sent)] = [(c, m) for c, m in core.call(2, function_id, data, invocation_id="c")
                   if c == 1]
    core.now += 0.004
    core.send(1, result(sent["invocation_id"], **answer))


def raw_call(core: Core, function_id: str, data: Any, **answer: Any) -> list[Any]:
    """Like call_and_answer, but returns the router's own output (Emit effects kept)."""
    out = core.router.handle(2, p.InvokeFunction(function_id=function_id,
                                                 invocation_id="c",
                                                 data=p.to_raw(data)), core.now)
    [sent] = [m for c, m in out if c == 1 and isinstance(m, p.InvokeFunction)]
    core.now += 0.004
    return list(out) + list(core.router.handle(1, p.decode(json.dumps(result(
        sent.invocation_id or "", **answer))), core.now))


def test_an_invocation_event_says_who_called_how_long_and_what(core: Core) -> None:
    call_and_answer(core, "orders::create", {"qty": 2}, result={"id": 7})
    [event] = [e for e in core.router.events if e["event"] == "invocation.finished"]
    assert event["function_id"] == "orders::create" and event["source"] == "cli"
    assert event["action"] == "sync" and event["status"] == "ok"
    assert event["duration_ms"] == pytest.approx(4.0)
    assert event["worker_id"] == core.hello[1]["worker_id"]
    assert (event["payload"], event["result"], event["error"]) == \
        ('{"qty": 2}', '{"id": 7}', None)  # the bytes as they came
    big = "x" * (2 * PREVIEW_BYTES)
    call_and_answer(core, "mail::send", big, error={
        "code": "smtp_down", "message": "no route", "stacktrace": "Traceback ..."})
    failed = core.router.events[-1]
    assert failed["status"] == "error" and failed["error"] == {"code": "smtp_down",
                                                               "message": "no route"}
    assert failed["stacktrace"] == "Traceback ..." and failed["result"] is None
    assert failed["payload"].endswith("…") and len(failed["payload"]) == PREVIEW_BYTES + 1


def test_a_worker_calling_is_sdk_and_a_void_call_says_so(core: Core) -> None:
    core.call(2, "engine::workers::register", {"name": "w"}, action={"type": "void"})
    [(_, sent)] = [(c, m) for c, m in core.call(2, "mail::send", 1, action={"type": "void"})
                   if c == 1]
    core.send(1, result(sent["invocation_id"], result=None))
    event = core.router.events[-1]
    assert (event["source"], event["action"]) == ("sdk", "void")


def test_watchers_get_the_history_first_then_what_they_asked_for(core: Core) -> None:
    call_and_answer(core, "orders::create", 1, result=1)
    call_and_answer(core, "mail::send", 1, error={"code": "x", "message": "y"})
    first = watch(core, filter={"function": "orders::*", "kinds": ["invocation"]})
    assert [e["event"] for e in first] == ["watching", "invocation.finished"]
    assert first[0]["replayed"] == 1 and first[1]["function_id"] == "orders::create"
    live = emitted(raw_call(core, "mail::send", 2, result=None))
    assert live  # emitted for the driver to fan out...
    hub_view = core.router.watchers[3]
    assert not any(hub_view.wants(e) for e in live)  # ...but not for this watcher
    assert [e["event"] for e in watch(core, filter={"errors": True})] == \
        ["watching", "invocation.finished"]
    assert watch(core, replay=0) == [{"seq": core.router._event_seq, "event": "watching",
                                      "time": pytest.approx(core.router.clock.wall),
                                      "replayed": 0}]


def test_started_events_are_made_only_while_someone_wants_them(core: Core) -> None:
    assert not [e for e in emitted(raw_call(core, "mail::send", 1, result=None))
                if e["event"] == "invocation.started"]
    watch(core, replay=0, filter={"kinds": ["invocation"]})
    kinds = [e["event"] for e in emitted(raw_call(core, "mail::send", 1, result=None))]
    assert kinds == ["invocation.started", "invocation.finished"]
    assert not [e for e in core.router.events if e["event"] == "invocation.started"]
    core.disconnect(3)  # the watcher goes: no more started events
    assert core.router._watching_starts == 0 and not core.router.watchers


@pytest.mark.parametrize("kinds, kind, wanted", [
    (["invocation"], "invocation.finished", True),
    (["invocation.*"], "invocation.started", True),
    (["queue"], "invocation.finished", False),
    (["trigger.skipped"], "trigger.skipped", True),
    (["trigger.skipped"], "trigger.fired", False),
])
def test_kinds_match_by_name_or_prefix(core: Core, kinds: list[str], kind: str,
                                       wanted: bool) -> None:
    watch(core, replay=0, filter={"kinds": kinds})
    assert core.router.watchers[3].wants({"event": kind}) is wanted


def test_stats_count_calls_errors_durations_and_the_last_minute(core: Core) -> None:
    for i in range(20):
        call_and_answer(core, "orders::create", i, result=None)
    call_and_answer(core, "orders::create", 0, error={"code": "bad", "message": "no"})
    [(_, answer)] = core.call(2, "engine::functions::stats", {"function": "orders::create"},
                              invocation_id="s")
    [row] = answer["result"]["functions"]
    assert (row["calls"], row["errors"]) == (21, 1)
    assert row["last_error"] == {"code": "bad", "message": "no"}
    assert 4.0 <= row["p50_ms"] <= 4.0 * 2 ** 0.25  # within one bucket of the truth
    assert row["calls_last_minute"] == 21 and len(row["per_second"]) == 60


def test_percentiles_and_the_minute_window() -> None:
    stats = FunctionStats()
    for ms in [1.0] * 90 + [100.0] * 10:
        stats.add(ms, False, 1000.5)
    assert 1.0 <= (stats.percentile_ms(0.5) or 0) < 1.2
    assert 100.0 <= (stats.percentile_ms(0.95) or 0) < 120.0
    assert stats.per_second(1000.9)[-1] == 100
    assert sum(stats.per_second(1061.0)) == 0  # a minute later: gone from the window
    assert FunctionStats().percentile_ms(0.5) is None


def test_a_watcher_that_does_not_read_misses_events_and_is_told(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.new_event_loop()
    try:
        hub = Hub(Router(), loop, write_limit=10**9, watch_buffer=4_000)
        worker, caller, watcher = FakeLink(), FakeLink(), FakeLink()
        for link in (worker, caller, watcher):
            hub.attach(link, "unix")
        hub.receive(worker.conn_id, [b'{"type":"registerfunction","id":"f"}'])
        hub.receive(watcher.conn_id, [b'{"type":"watch","replay":0}'])
        def one_call(i: int) -> None:
            hub.receive(caller.conn_id, [call(f"c{i}", "f")])
            [sent] = [m for m in worker.messages()[-1:] if m["type"] == "invokefunction"]
            hub.receive(worker.conn_id, [json.dumps(result(sent["invocation_id"],
                                                           result=i)).encode()])
            hub.live._fan_out()  # what its timer does every WATCH_FLUSH_S

        for i in range(100):
            one_call(i)
        # It never read: what it holds stays near its buffer, the rest was counted.
        assert watcher.unsent <= 4_000 + 1_000
        answered = [m for m in caller.messages() if m["type"] == "invocationresult"]
        assert len(answered) == 100  # routing went on regardless
        watcher.unsent = 0  # now it reads
        one_call(100)
        frames = watcher.messages()
        missed = [m for m in frames if m.get("event") == "missed"]
        assert len(missed) == 1 and missed[0]["count"] > 50
        assert frames[-2] == missed[0] and frames[-1]["event"] == "invocation.finished"
        assert frames[-1]["result"] == "100"  # and it goes on with what came next
    finally:
        loop.close()


def test_registrations_are_events(core: Core) -> None:
    core.send(2, {"type": "registertrigger", "id": "t", "trigger_type": "subscribe",
                  "function_id": "mail::send", "config": {"topic": "x"}})
    kinds = [(e["event"], e.get("what"), e.get("id")) for e in core.router.events]
    assert ("registration", "function", "orders::create") in kinds
    assert ("registration", "trigger", "t") in kinds
    [trigger] = [e for e in core.router.events if e.get("what") == "trigger"]
    assert trigger["owner"] == core.hello[2]["worker_id"] and trigger["status"] == "active"


def test_callers_are_answered_before_watchers_hear_and_no_event_comes_twice() -> None:
    """A turn's live events go out to watchers after the turn's answers were written
    (the fan-out runs later, on a timer); a watcher that subscribes in between has the
    event in its replay and does not get it again live."""
    loop = asyncio.new_event_loop()
    try:
        hub = Hub(Router(), loop, write_limit=10**9)
        worker, caller, early, late = FakeLink(), FakeLink(), FakeLink(), FakeLink()
        for link in (worker, caller, early, late):
            hub.attach(link, "unix")
        hub.receive(worker.conn_id, [b'{"type":"registerfunction","id":"f"}'])
        hub.receive(early.conn_id, [b'{"type":"watch","replay":0}'])
        hub.receive(caller.conn_id, [call("c1", "f")])
        [sent] = [m for m in worker.messages() if m["type"] == "invokefunction"]
        hub.receive(worker.conn_id, [json.dumps(result(sent["invocation_id"],
                                                       result=1)).encode()])
        assert [m["type"] for m in caller.messages()] == ["workerregistered",
                                                          "invocationresult"]
        hub.receive(late.conn_id, [b'{"type":"watch","replay":10}'])
        hub.live._fan_out()
        finished = [[m for m in link.messages() if m.get("event") == "invocation.finished"]
                    for link in (early, late)]
        assert [len(f) for f in finished] == [1, 1]
        assert finished[0] == finished[1]  # the same event: live for one, replayed
    finally:
        loop.close()


def test_a_watcher_with_max_rate_gets_a_sample_every_failure_and_a_count() -> None:
    loop = asyncio.new_event_loop()
    try:
        hub = Hub(Router(), loop, write_limit=10**9)
        worker, caller, sampled, whole = FakeLink(), FakeLink(), FakeLink(), FakeLink()
        for link in (worker, caller, sampled, whole):
            hub.attach(link, "unix")
        hub.receive(worker.conn_id, [b'{"type":"registerfunction","id":"f"}'])
        hub.receive(sampled.conn_id, [b'{"type":"watch","replay":0,'
                                      b'"filter":{"max_rate":10}}'])
        hub.receive(whole.conn_id, [b'{"type":"watch","replay":0}'])
        for i in range(100):
            hub.receive(caller.conn_id, [call(f"c{i}", "f")])
            [sent] = [m for m in worker.messages()[-1:] if m["type"] == "invokefunction"]
            answer = (result(sent["invocation_id"], result=i) if i % 10
                      else result(sent["invocation_id"], error={"code": "x", "message": "y"}))
            hub.receive(worker.conn_id, [json.dumps(answer).encode()])
        hub.live._fan_out()

        def finished(link: FakeLink) -> list[dict[str, Any]]:
            return [m for m in link.messages() if m.get("event") == "invocation.finished"]

        assert len(finished(whole)) == 100  # no cap: everything
        got = finished(sampled)
        errors = [e for e in got if e["status"] == "error"]
        assert len(errors) == 10  # every failure
        assert len(got) - len(errors) <= 10  # a second's worth of the rest
        [marker] = [m for m in sampled.messages() if m.get("event") == "sampled"]
        assert marker["skipped"] == 100 - len(got)
        assert not [m for m in whole.messages() if m.get("event") == "sampled"]
    finally:
        loop.close()


@pytest.mark.parametrize("max_rate", [0, -1, 1.5, True, "10"])
def test_a_bad_max_rate_is_refused(core: Core, max_rate: Any) -> None:
    out = core.send(3, {"type": "watch", "filter": {"max_rate": max_rate}})
    [(_, error)] = out
    assert error["type"] == "error" and "max_rate" in error["message"]


@given(payload=st.binary(max_size=600), result=st.none() | st.binary(max_size=600),
       duration=st.floats(0, 1e6), wall=st.floats(1e9, 2e9),
       worker=st.none() | st.text(max_size=5))
def test_a_success_frame_made_without_a_dict_is_the_dict_s_frame(
        payload: bytes, result: bytes | None, duration: float, wall: float,
        worker: str | None) -> None:
    """The fast frame of a plain success (no dict made) says exactly what the dict says."""
    from msgspec import Raw

    from iii_daemon.core.event_log import Finished, frame, head
    from iii_daemon.core.invocations import Invocation

    def finished() -> Finished:
        inv = Invocation(id="i1", function_id="f::g", worker=1, caller=None,
                         caller_invocation_id=None, started=0.0, timeout_ms=1, deadline=1.0,
                         source="sdk", action="void", worker_id=worker, payload=head(payload))
        return Finished(7, wall, inv, None if result is None else Raw(result), None, duration)

    fast = finished().frame()
    assert fast == frame(finished().event())
    assert json.loads(fast)["event"] == "invocation.finished"


def test_fan_out_decides_per_watcher_in_the_core_with_no_driver() -> None:
    """What each watcher gets, the missed count and the sample are the core's to decide
    (core/watchers.fan_out); the hub only moves the bytes."""
    from iii_daemon.core.watchers import Watcher, fan_out, parse

    events = [{"seq": i, "event": "invocation.finished", "function_id": "f",
               "error": None if i % 2 else {"code": "x"}} for i in range(1, 7)]
    slow, sampled = Watcher(), parse({"max_rate": 1})
    sampled.counted_at = 0.0
    held = {1: 10_000, 2: 0, 3: None}  # 1 is over its buffer; 3 is gone
    watchers = {1: slow, 2: sampled, 3: Watcher()}
    shares = fan_out(watchers, events, held.__getitem__, 1000, now=0.0)
    assert set(shares) == {2} and slow.missed == 6
    lines = [json.loads(line) for line in bytes(shares[2]).splitlines()]
    # Every failure (even seq), and one success from the allowance of 1 a second.
    assert [e.get("seq") for e in lines[:-1]] == [1, 2, 4, 6]
    assert lines[-1] == {"type": "event", "event": "sampled", "skipped": 2}
    held[1] = 0  # it reads again: first the count of what it missed
    [marker, first, *_] = bytes(fan_out({1: slow}, events[:2], held.__getitem__, 1000,
                                        now=1.0)[1]).splitlines()
    assert json.loads(marker) == {"type": "event", "event": "missed", "count": 6}
    assert json.loads(first)["seq"] == 1


def test_every_recorded_event_is_a_known_kind() -> None:
    """EVENT_KINDS lists what a watcher may name: it must cover every record() call."""
    from pathlib import Path

    from iii_daemon.core.watchers import EVENT_KINDS

    source = "".join(path.read_text() for path in
                     Path(__file__).resolve().parents[2].joinpath("iii_daemon").rglob("*.py"))
    recorded = set(re.findall(r'record\(\s*"([a-z_.]+)"', source))
    assert recorded and recorded == set(EVENT_KINDS)


@pytest.mark.parametrize("bad, says", [
    ({"kinds": ["bogus"]}, "unknown event kind 'bogus'; kinds: invocation, "),
    ({"kinds": ["invocation.finishd"]}, "unknown event kind 'invocation.finishd'"),
    ({"function": "["}, "has a '[' without its ']'"),
    ({"function": "orders::[ab"}, "has a '[' without its ']'"),
])
def test_unknown_kinds_and_broken_globs_are_refused(bad: dict[str, Any], says: str) -> None:
    from iii_daemon.core.watchers import FilterError, parse

    with pytest.raises(FilterError, match=re.escape(says)):
        parse(bad)


@pytest.mark.parametrize("good", [{"kinds": ["queue", "trigger.*", "worker.left"]},
                                  {"function": "orders::[ab]*"}, {"function": "[[]x"}])
def test_known_kinds_and_sound_globs_are_taken(good: dict[str, Any]) -> None:
    from iii_daemon.core.watchers import parse

    parse(good)
