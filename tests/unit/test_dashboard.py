"""The dashboard's model, without Textual or a pilot: what each view shows, the log's
events, the header (iii_cli.dashboard; the TUI only renders it)."""

from __future__ import annotations

from typing import Any

from iii_cli.dashboard import (
    FUNCTION_COLUMNS,
    LIST_VIEWS,
    ROWS_PER_BATCH,
    Dashboard,
    list_columns,
    list_rows,
)
from iii_cli.list_view import KINDS, add_display_columns
from iii_cli.output import table

WORKERS = [{"id": "w-1", "name": "math\x1b[2J", "pid": 7, "transport": "unix",
            "function_count": 2, "active_invocations": 1, "connected_at": "2026-12-03",
            "managed": "math", "managed_status": "running"}]
QUEUES = [{"queue": "jobs", "function_id": "math::add", "ready": 1, "in_flight": 0,
           "delayed": 0, "waiting_for_function": 0, "dead_letters": 2, "delivered": 5},
          {"queue": "signups", "function_id": None, "ready": 0, "in_flight": 0, "delayed": 0,
           "waiting_for_function": 3, "dead_letters": 0, "delivered": 0}]


def event(seq: int, function_id: str = "f", error: Any = None) -> dict[str, Any]:
    return {"seq": seq, "event": "invocation.finished", "function_id": function_id,
            "status": "ok" if error is None else "error", "error": error, "time": 1.0}


def test_the_views_show_what_iii_list_shows() -> None:
    """Before: the TUI's workers and queues views had columns of their own."""
    for kind in LIST_VIEWS.values():
        assert list_columns(kind) == [title for _, title in KINDS[kind][2]]
    [(_, cells)] = list_rows("workers", [dict(w) for w in WORKERS])
    rows = [dict(w) for w in WORKERS]
    add_display_columns("workers", rows, lambda function_id: None)  # as iii list does
    listed = table(rows, KINDS["workers"][2], width=200)
    assert [c.strip() for c in listed.splitlines()[1].split("  ") if c.strip()] == \
        [c for c in cells if c]  # the same cells, escaped the same way
    assert cells[0] == "math\\x1b[2J"
    assert cells[-1] == "math (running)"  # which managed worker's process it is
    queues = list_rows("queues", [dict(q) for q in QUEUES])
    assert queues[1] == ("signups", ("signups", "-", "0", "0", "0", "3", "0", "0"))
    assert len(queues[0][1]) == len(list_columns("queues"))


def test_the_log_takes_batches_and_counts_what_comes_while_paused() -> None:
    model = Dashboard("/tmp/s.sock")
    for i in range(1, 4):
        model.on_event(event(i), now=0.0, keep=500)
    assert [e["seq"] for e in model.take_batch()] == [1, 2, 3]
    model.toggle_pause()
    model.on_event(event(4), now=0.0, keep=500)
    assert model.take_batch() == [] and model.unseen == 1
    assert "paused: 1 new" in model.header(now=0.0)
    model.toggle_pause()
    assert model.unseen == 0 and [e["seq"] for e in model.shown()] == [1, 2, 3, 4]
    for i in range(5, 5 + 2 * ROWS_PER_BATCH):
        model.on_event(event(i), now=0.0, keep=500)
    assert len(model.take_batch()) == ROWS_PER_BATCH  # a flood: the newest


def test_errors_only_and_the_function_filter_choose_what_the_log_shows() -> None:
    model = Dashboard("s")
    for e in (event(1, "orders::create"), event(2, "orders::pay", {"code": "x"}),
              event(3, "mail::send", {"code": "y"})):
        model.on_event(e, now=0.0, keep=500)
    model.take_batch()
    model.errors_only = True
    assert [e["seq"] for e in model.shown()] == [2, 3]
    model.function_filter = "orders::*"
    assert [e["seq"] for e in model.shown()] == [2]
    assert "errors only" in model.header(0.0) and "filter orders::*" in model.header(0.0)


def test_a_sample_is_told_in_the_header_and_a_new_stream_starts_over() -> None:
    model = Dashboard("s")
    model.on_event(event(1), now=0.0, keep=500)
    assert not model.on_event({"event": "sampled", "skipped": 40}, now=10.0, keep=500)
    model.on_event({"event": "sampled", "skipped": 2}, now=11.0, keep=500)
    assert "sample (42 left out)" in model.header(now=12.0)
    assert "sample" not in model.header(now=20.0)  # told for a while only
    assert model.on_event({"event": "watching"}, now=21.0, keep=500)  # reconnected
    assert model.state == "connected" and model.incoming == [] and not model.events
    for i in range(10):
        model.on_event(event(i), now=0.0, keep=2)
    assert len(model.incoming) <= 8  # a flood keeps only the newest few times the log


def test_the_functions_table_and_the_header_escape_what_the_daemon_sends() -> None:
    model = Dashboard("/tmp/[s].sock")
    model.polled({"version": "1\x07", "workers": 1, "functions": 2, "triggers": 0},
                 [{"function_id": "math::add", "calls": 3, "errors": 1, "p50_ms": 0.5,
                   "p95_ms": 1.0, "per_second": [0, 1, 2], "rate_per_s": 2.0}],
                 [{"function_id": "math::add", "id": "o1"}])
    rows = model.function_rows(
        [{"function_id": "math::add", "worker_id": "w-1"},
         {"function_id": "state::get", "worker_id": None}], model_stats(), WORKERS)
    assert len(rows) == len(model.function_rows([], [], [])) + 1
    function_id, cells = rows[0]
    assert function_id == "math::add" and cells[:4] == ("math::add", "math\\x1b[2J", "3", "1")
    assert len(cells) == len(FUNCTION_COLUMNS) and cells[-1] == "1"  # one observer
    header = model.header(0.0)
    assert "\x07" not in header and "1\\x07" in header and "2.0 calls/s" in header
    assert "/tmp/\\[s].sock" in header  # no markup from a socket path


def model_stats() -> list[dict[str, Any]]:
    return [{"function_id": "math::add", "calls": 3, "errors": 1, "p50_ms": 0.5,
             "p95_ms": 1.0, "per_second": [0, 1, 2], "rate_per_s": 2.0}]


def test_a_row_keeps_the_id_as_the_daemon_spells_it_for_actions() -> None:
    """Cells show ids escaped (never alike); t and r act on the id itself."""
    model = Dashboard("s")
    [(function_id, cells)] = model.function_rows(
        [{"function_id": "p\u0430y", "worker_id": "w-1"}], [], WORKERS)
    assert function_id == "p\u0430y" and cells[0] == "p\\u0430y"
    [(queue, _)] = list_rows("queues", [dict(QUEUES[0], queue="f\u00e9")])
    assert queue == "f\u00e9"


def test_the_last_minute_column_covers_sixty_seconds() -> None:
    """20 marks for the 60 seconds the daemon counts: 3 s a mark, oldest first."""
    from iii_cli.dashboard import sparkline

    only_the_oldest = sparkline([9] + [0] * 59)
    assert len(only_the_oldest) == 20 and only_the_oldest[0] == "█"
    assert only_the_oldest[1:].strip() == ""
    assert sparkline([0] * 59 + [4])[-1] == "█"
    assert sparkline([0] * 60) == "·" * 20
