"""Snapshots of the main screens at 80x24 and 160x48 (pytest-textual-snapshot; after a
deliberate change of the layout: ``python -m pytest tests/tui --snapshot-update``).

The data is fixed so the picture is: no daemon answers on the socket (the header says
so), and the functions, the log and the views are filled with the same rows each time.
What the screens do with a real daemon is tested in test_tui.py."""

from __future__ import annotations

import time
from typing import Any

import pytest
from textual.widgets import DataTable

from iii_cli.tui.app import IIIApp

SOCKET = "/nonexistent/iii-snapshot.sock"
T0 = 1_796_000_000.0
FUNCTIONS = [{"function_id": f, "worker_id": "w1"} for f in
             ("math::add", "math::divide", "orders::create", "mail::send")]
STATS = [{"function_id": "math::add", "calls": 1200, "errors": 0, "p50_ms": 0.42,
          "p95_ms": 1.1, "per_second": [i % 7 for i in range(60)], "rate_per_s": 20.0},
         {"function_id": "math::divide", "calls": 30, "errors": 12, "p50_ms": 0.5,
          "p95_ms": 2.4, "per_second": [0] * 50 + [3] * 10, "rate_per_s": 0.5}]
WORKERS = [{"id": "w1", "name": "math-worker", "pid": 4242, "transport": "unix",
            "functions": [f["function_id"] for f in FUNCTIONS]}]
EVENTS: list[dict[str, Any]] = [
    {"seq": i, "event": "invocation.finished", "time": T0 + i, "function_id": fn,
     "source": "cli", "status": "error" if fn == "math::divide" else "ok",
     "duration_ms": 0.25 * i, "error": {"code": "division_by_zero",
                                         "message": "cannot divide by zero"}
     if fn == "math::divide" else None, "result": None if fn == "math::divide"
     else '{"sum":3}', "payload": '{"a":1,"b":2}'}
    for i, fn in enumerate(["math::add", "math::divide", "orders::create"] * 4, 1)
] + [{"seq": 13, "event": "trigger.skipped", "time": T0 + 13, "function_id": "mail::send",
      "trigger_id": "daily", "reason": "condition 'gate' returned false"}]


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


async def filled(pilot: Any) -> None:
    app: IIIApp = pilot.app
    while app.model.state != "reconnecting":  # the first poll found no daemon
        await pilot.pause(0.05)
    app._fill(app.query_one("#functions", DataTable),
              app.model.function_rows(FUNCTIONS, STATS, WORKERS))
    app.model.incoming.extend(EVENTS)
    log = app.query_one("#log")
    deadline = time.monotonic() + 10
    while log.row_count < len(EVENTS):  # one batch adds them all
        assert time.monotonic() < deadline, "the log never showed the events"
        await pilot.pause(0.05)
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_the_live_view(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(IIIApp(SOCKET), terminal_size=size, run_before=filled)


def test_the_help_screen(snap_compare: Any) -> None:
    assert snap_compare(IIIApp(SOCKET), press=["question_mark"], run_before=filled)
