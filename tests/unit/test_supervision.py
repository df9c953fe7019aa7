"""The supervision policy of managed workers (core/supervision.py), with a fake clock:
states, backoff, what stopping asks of the driver. No process is started here."""

from __future__ import annotations

from typing import Any

import pytest

from iii_daemon.core.effects import Kill, LogNote, Output, Spawn
from iii_daemon.core.supervision import Supervisor, backoff_s
from iii_sdk.worker_specs import WorkerSpec, entries_problem, entry_problem, spec_of


def spec(restart: str = "on-failure", grace_ms: int = 5000) -> WorkerSpec:
    return WorkerSpec(name="math", command=("python", "w.py"), restart=restart,
                      stop_grace_ms=grace_ms)


def commands(out: Output) -> list[Any]:
    return [effect for _, effect in out if not isinstance(effect, LogNote)]


def notes(out: Output) -> list[str]:
    return [effect.text for _, effect in out if isinstance(effect, LogNote)]


def started(sup: Supervisor, now: float, pid: int, restart: str = "on-failure",
            grace_ms: int = 5000) -> None:
    out: Output = []
    sup.add(spec(restart, grace_ms), now, out)
    assert commands(out) == [Spawn(spec(restart, grace_ms))]
    sup.spawned("math", pid, now, out)


def test_a_failing_worker_backs_off_1_s_doubling_to_30_s() -> None:
    sup = Supervisor()
    started(sup, 0.0, pid=100)
    now, pid, delays = 0.0, 100, []
    for _ in range(7):
        out: Output = []
        sup.exited("math", pid, 1, now + 0.5, out)  # up half a second, then code 1
        row = sup.row(sup.workers["math"], now + 0.5)
        assert row["status"] == "backoff" and row["last_exit"] == 1
        delays.append(row["next_start_in_s"])
        assert "restarting in" in notes(out)[0]
        due = sup.next_due()
        assert due is not None
        out = []
        sup.due(due - 0.01, out)
        assert commands(out) == []  # not before its time
        sup.due(due, out)
        assert commands(out) == [Spawn(spec())]
        now, pid = due, pid + 1
        sup.spawned("math", pid, now, out)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert sup.workers["math"].restarts == 7


def test_a_worker_up_60_s_backs_off_from_1_s_again() -> None:
    sup = Supervisor()
    started(sup, 0.0, pid=100)
    out: Output = []
    sup.workers["math"].failures = 5  # it failed a lot before
    sup.exited("math", 100, 1, 61.0, out)  # ... but stayed up a minute this time
    assert sup.row(sup.workers["math"], 61.0)["next_start_in_s"] == 1.0
    assert backoff_s(0) == 1.0 and backoff_s(10) == 30.0


@pytest.mark.parametrize(("policy", "code", "status"), [
    ("never", 3, "exited 3"), ("never", 0, "exited 0"), ("on-failure", 0, "exited 0"),
    ("on-failure", -9, "backoff"), ("always", 0, "backoff"), ("always", 2, "backoff")])
def test_what_an_exit_leads_to_by_policy(policy: str, code: int, status: str) -> None:
    sup = Supervisor()
    started(sup, 0.0, pid=100, restart=policy)
    out: Output = []
    sup.exited("math", 100, code, 5.0, out)
    assert sup.row(sup.workers["math"], 5.0)["status"] == status
    assert sup.next_due() == (6.0 if status == "backoff" else None)


def test_stop_sends_term_then_kill_after_the_grace_and_answers_once_gone() -> None:
    sup = Supervisor()
    started(sup, 0.0, pid=100, grace_ms=2000)
    answers: list[Any] = []
    out: Output = []
    sup.stop("math", 10.0, out, lambda result, error, out: answers.append(result))
    assert commands(out) == [Kill("math", 100, "TERM")]
    assert sup.row(sup.workers["math"], 10.0)["status"] == "stopping"
    assert sup.next_due() == 12.0
    out = []
    sup.due(11.9, out)
    assert commands(out) == []
    sup.due(12.0, out)
    assert commands(out) == [Kill("math", 100, "KILL")]
    assert answers == []  # not gone yet
    out = []
    sup.exited("math", 100, -9, 12.1, out)
    assert commands(out) == []  # stopped on purpose: no restart
    assert [a["status"] for a in answers] == ["stopped"]
    assert sup.next_due() is None


def test_restart_starts_it_again_once_the_old_process_is_gone() -> None:
    sup = Supervisor()
    started(sup, 0.0, pid=100)
    out: Output = []
    sup.stop("math", 1.0, out, None, then="start")
    assert commands(out) == [Kill("math", 100, "TERM")]
    out = []
    sup.exited("math", 100, -15, 1.2, out)
    assert commands(out) == [Spawn(spec())]
    assert sup.workers["math"].restarts == 1


def test_a_stop_before_the_driver_started_it_stops_it_when_it_is_told() -> None:
    sup = Supervisor()
    out: Output = []
    sup.add(spec(), 0.0, out)
    sup.stop("math", 0.0, out)
    out = []
    sup.spawned("math", 100, 0.1, out)
    assert commands(out) == [Kill("math", 100, "TERM")]


def test_stopping_what_does_not_run_answers_at_once_and_remove_forgets_it() -> None:
    sup = Supervisor()
    started(sup, 0.0, pid=100, restart="never")
    out: Output = []
    sup.exited("math", 100, 0, 1.0, out)
    answers: list[Any] = []
    sup.stop("math", 2.0, out, lambda result, error, out: answers.append(result),
             then="remove")
    assert answers == [{"removed": "math"}] and "math" not in sup.workers


def test_a_stale_exit_or_a_start_that_failed() -> None:
    sup = Supervisor()
    started(sup, 0.0, pid=100)
    out: Output = []
    sup.exited("math", 99, 1, 1.0, out)  # an earlier process of it: ignored
    assert sup.workers["math"].status == "starting" and out == []
    sup.spawn_failed("math", "no such program: w", 1.0, out)
    row = sup.row(sup.workers["math"], 1.0)
    assert row["status"] == "backoff" and row["error"] == "no such program: w"


def test_its_connections_make_it_running_and_are_told_apart_by_process_group() -> None:
    sup = Supervisor()
    started(sup, 0.0, pid=100)
    assert sup.connected(7, 555) is None  # someone else's
    assert sup.connected(8, 100) == "math"
    assert sup.workers["math"].status == "running"
    sup.disconnected(8, "math")
    assert sup.workers["math"].connections == set()
    out: Output = []
    sup.add(WorkerSpec(name="quiet", command=("sleep", "9")), 0.0, out)
    sup.spawned("quiet", 200, 0.0, out)
    sup.due(4.9, out)
    assert sup.workers["quiet"].status == "starting"
    sup.due(5.0, out)  # never connects (not an iii worker): running after 5 s
    assert sup.workers["quiet"].status == "running"


@pytest.mark.parametrize(("entry", "problem"), [
    ({"name": "a b", "command": ["x"]}, "worker name 'a b' is not valid"),
    ({"name": "a\x1b[2J", "command": ["x"]}, "worker name 'a\\x1b[2J' is not valid"),
    ({"name": "m"}, "'command' must be a non-empty list of strings"),
    ({"name": "m", "command": []}, "'command' must be a non-empty list"),
    ({"name": "m", "command": ["x"], "restart": "sometimes"}, "'restart' must be always"),
    ({"name": "m", "command": ["x"], "stop_grace_ms": 0}, "'stop_grace_ms' must be from 1"),
    ({"name": "m", "command": ["x"], "env": {"A=B": "c"}}, "'env' must be a table"),
    ({"name": "m", "command": ["x"], "user": "root"}, "unknown key 'user'"),
])
def test_entries_are_checked(entry: dict[str, Any], problem: str) -> None:
    found = entry_problem(entry)
    assert found is not None and problem in found


def test_a_good_entry_and_names_used_twice() -> None:
    entry = {"name": "math", "command": ["python", "w.py"], "env": {"A": "1"}}
    assert entry_problem(entry) is None
    assert spec_of(entry).as_entry() == {**entry, "restart": "on-failure",
                                          "stop_grace_ms": 5000}
    assert entries_problem([entry, dict(entry)]) == "worker name 'math' is used twice"
