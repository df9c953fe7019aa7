"""How observer events read as one line (iii watch, the TUI's log)."""

from __future__ import annotations

from iii_cli.events_view import detail_of, status_of


def test_observer_events_say_who_observes_what_and_why() -> None:
    changed = {"event": "observer.changed", "id": "o1", "function_id": "pay",
               "target": "alert", "state": "disposed",
               "reason": {"code": "MAX_FIRES", "message": "fired 2 times"}}
    assert status_of(changed) == "obs"
    assert detail_of(changed) == "o1 -> alert: disposed (MAX_FIRES)"
    refused = {"event": "observer.changed", "id": "o2", "target": "alert",
               "state": "error", "error": {"code": "INVALID_FILTER", "message": "bad"}}
    assert (status_of(refused), detail_of(refused)) == ("error", "INVALID_FILTER: bad")
    skipped = {"event": "observer.skipped", "id": "o1", "reason": "observe_depth 8"}
    assert (status_of(skipped), detail_of(skipped)) == ("skip", "observe_depth 8")


def test_managed_worker_events_say_what_happened_and_a_crash_is_an_error() -> None:
    crash = {"event": "managed.exited", "name": "math", "code": -9, "status": "backoff",
             "restart_in_s": 1.0, "error": {"code": "worker_exited",
                                            "message": "math exited with signal 9"}}
    assert status_of(crash) == "error"
    assert detail_of(crash) == "math exited with signal 9, restart in 1.0 s"
    stopped = {"event": "managed.exited", "name": "math", "code": -15, "status": "stopped"}
    assert (status_of(stopped), detail_of(stopped)) == (
        "stopped", "math exited (code -15): stopped")
    started = {"event": "managed.started", "name": "math", "pid": 7, "restarts": 1}
    assert (status_of(started), detail_of(started)) == ("start", "math pid 7")
