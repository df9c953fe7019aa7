"""The live log widget on its own: bounded rows, a cursor that follows, keys, selection,
and columns that fit the width."""

from __future__ import annotations

import asyncio
from typing import Any

from textual import events
from textual.app import App, ComposeResult

from iii_cli.tui.log_view import LogView, widths


class Host(App[None]):
    def __init__(self, limit: int = 5) -> None:
        super().__init__()
        self.limit = limit
        self.selected: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield LogView(self.limit, id="log")

    def on_log_view_selected(self, message: LogView.Selected) -> None:
        self.selected.append(message.event)


def rows(n: int, start: int = 0) -> list[tuple[list[tuple[str, str]], dict[str, Any]]]:
    return [([(f"t{i}", ""), ("ok", "green"), ("1.00", ""), (f"f{i}", ""), ("cli", ""),
              (f"detail {i}", "")], {"seq": i}) for i in range(start, start + n)]


def test_rows_are_bounded_and_the_cursor_follows_and_moves() -> None:
    async def scenario() -> None:
        app = Host()
        async with app.run_test(size=(80, 4)) as pilot:
            log = app.query_one(LogView)
            log.focus()
            log.add_rows(rows(3))
            assert (log.row_count, log.cursor_row) == (3, 2)  # follows the newest
            log.add_rows(rows(4, start=3))
            assert log.row_count == 5  # the two oldest went
            assert [log.get_row_at(i)[3] for i in range(5)] == ["f2", "f3", "f4", "f5", "f6"]
            assert log.cursor_row == 4
            await pilot.press("up", "up")
            assert log.cursor_row == 2
            log.add_rows(rows(1, start=7))  # not on the last row: it stays on its row
            assert log.event_at(log.cursor_row) == {"seq": 4}
            await pilot.press("home")
            assert log.cursor_row == 0
            await pilot.press("end")
            assert log.cursor_row == 4
            await pilot.press("enter")
            await pilot.pause()
            assert app.selected == [{"seq": 7}]
            # Only three rows fit under the header: the cursor's row is in view.
            assert log.visible == 3
            await pilot.press("home")
            assert log.top == 0
            await pilot.press("end")
            assert log.top == log.row_count - 3
            line = "".join(s.text for s in log.render_line(3))
            assert "f7" in line and "detail 7" in line
            log.clear()
            assert (log.row_count, log.event_at(0)) == (0, None)
            await pilot.press("enter")  # nothing to select: nothing happens
            assert len(app.selected) == 1

    asyncio.run(scenario())


def test_columns_fit_the_width() -> None:
    for width in (60, 80, 120, 200):
        columns = widths(width)
        used = sum(columns) + 2 * (len(columns) - 1)
        assert 14 <= columns[3] <= 28
        assert used <= max(width, 65)  # the fixed columns and a 14-wide function
    assert widths(200)[3] == 28


def test_a_click_selects_a_row_and_a_double_click_opens_it() -> None:
    async def scenario() -> None:
        app = Host(limit=100)
        async with app.run_test(size=(80, 6)) as pilot:
            log = app.query_one(LogView)
            log.add_rows(rows(3))
            await pilot.click(LogView, offset=(2, 1))  # the first row, under the header
            assert log.cursor_row == 0
            await pilot.click(LogView, offset=(2, 2), times=2)
            await pilot.pause()
            assert log.cursor_row == 1 and app.selected == [{"seq": 1}]
            log.add_rows(rows(20, start=3))  # more than fit: the wheel scrolls
            await pilot.press("home")
            log.post_message(events.MouseScrollDown(log, 1, 1, 0, 0, 0, False, False, False))
            await pilot.pause()
            assert log.top == 3 and log.cursor_row == 3  # the cursor stays in view

    asyncio.run(scenario())
