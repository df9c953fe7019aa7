"""The live log: one line per event, drawn with Textual's line API.

A DataTable lays every cell out again with Rich whenever rows change; under a flood that
was most of the TUI's CPU, taken from the daemon and its workers on a small machine.
Here a row becomes a :class:`Strip` once, when it arrives, and drawing the screen is
picking the visible strips (the cursor's row gets its highlight). Rows are bounded:
the oldest go as new ones come, at no cost.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

TITLES = ("TIME", "STATUS", "MS", "FUNCTION", "SOURCE", "DETAIL")
GAP = "  "
#: Widths of the columns before FUNCTION and of SOURCE; FUNCTION gets 14 to 28 of what
#: is left and DETAIL the rest.
FIXED = {"TIME": 12, "STATUS": 7, "MS": 8, "SOURCE": 14}


def widths(width: int) -> tuple[int, ...]:
    """Each column's width for a log ``width`` cells wide (DETAIL: 0, the rest)."""
    left = width - sum(FIXED.values()) - len(GAP) * (len(TITLES) - 1)
    function = max(14, min(28, left * 3 // 5))
    return (FIXED["TIME"], FIXED["STATUS"], FIXED["MS"], function, FIXED["SOURCE"], 0)
HEADER_STYLE = Style(bold=True)
CURSOR_STYLE = Style(reverse=True)


class LogView(Widget, can_focus=True):
    """Rows of cells (text, style), newest at the bottom, at most ``limit`` of them, each
    with the event it shows. It scrolls itself (``top``: the first row in view), so where
    it is never waits for a layout pass: the cursor's row is always in view, and a cursor
    on the last row follows new rows."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
        Binding("enter", "select", "Detail", show=False),
    ]
    DEFAULT_CSS = """
    LogView { height: 1fr; }
    """

    class Selected(Message):
        """Enter (or a click) on a row."""

        def __init__(self, event: dict[str, Any]) -> None:
            super().__init__()
            self.event = event

    def __init__(self, limit: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rows: collections.deque[_Row] = collections.deque(maxlen=limit)
        self.cursor_row = 0
        #: The first row in view.
        self.top = 0
        self._header = _Row([(title, "") for title in TITLES], {})

    # --- rows -------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._rows)

    def get_row_at(self, index: int) -> list[str]:
        """The cells' texts of row ``index``."""
        return [text for text, _ in self._rows[index].cells]

    def event_at(self, index: int) -> dict[str, Any] | None:
        return self._rows[index].event if 0 <= index < len(self._rows) else None

    def add_rows(self, rows: Iterable[tuple[Sequence[tuple[str, str]], dict[str, Any]]]) -> None:
        """Append rows of ``(text, style)`` cells; a cursor on the last row follows."""
        follow = self.cursor_row >= len(self._rows) - 1
        before = len(self._rows)
        added = 0
        for cells, event in rows:
            self._rows.append(_Row(list(cells), event))
            added += 1
        if not added:
            return
        dropped = before + added - len(self._rows)
        self.top = max(0, self.top - dropped)
        self.move_cursor(len(self._rows) - 1 if follow else self.cursor_row - dropped)

    def clear(self) -> None:
        self._rows.clear()
        self.cursor_row = self.top = 0
        self.refresh()

    @property
    def visible(self) -> int:
        """How many rows fit under the header."""
        return max(1, self.size.height - 1)

    def move_cursor(self, row: int) -> None:
        """Put the cursor on ``row`` (clamped) and scroll it into view."""
        if not self._rows:
            return
        self.cursor_row = max(0, min(row, len(self._rows) - 1))
        self._into_view()
        self.refresh()

    def _into_view(self) -> None:
        visible = self.visible
        if self.cursor_row < self.top:
            self.top = self.cursor_row
        elif self.cursor_row >= self.top + visible:
            self.top = self.cursor_row - visible + 1
        self.top = max(0, min(self.top, len(self._rows) - visible))

    # --- keys and mouse ------------------------------------------------------------------

    def action_cursor(self, step: int) -> None:
        self.move_cursor(self.cursor_row + step)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * max(1, self.size.height - 2))

    def action_cursor_to(self, row: int) -> None:
        self.move_cursor(len(self._rows) - 1 if row < 0 else row)

    def action_select(self) -> None:
        event = self.event_at(self.cursor_row)
        if event is not None:
            self.post_message(self.Selected(event))

    def on_click(self, click: events.Click) -> None:
        row = self.top + click.y - 1
        if click.y >= 1 and 0 <= row < len(self._rows):
            self.move_cursor(row)
            if click.chain > 1:
                self.action_select()

    def on_mouse_scroll_down(self, scroll: events.MouseScrollDown) -> None:
        self._scroll(3)
        scroll.stop()

    def on_mouse_scroll_up(self, scroll: events.MouseScrollUp) -> None:
        self._scroll(-3)
        scroll.stop()

    def _scroll(self, rows: int) -> None:
        """The wheel moves the view, and the cursor with it when it would leave."""
        self.top = max(0, min(self.top + rows, len(self._rows) - self.visible))
        self.cursor_row = max(self.top, min(self.cursor_row, self.top + self.visible - 1))
        self.refresh()

    # --- drawing --------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            return self._header.strip(width, HEADER_STYLE)
        index = self.top + y - 1
        if not 0 <= index < len(self._rows):
            return Strip.blank(width)
        strip = self._rows[index].strip(width)
        return strip.apply_style(CURSOR_STYLE) if index == self.cursor_row else strip

    def on_resize(self) -> None:
        self._into_view()


class _Row:
    """One line: its cells, its event, and its strip at the last width drawn (made once
    per width, not once per frame)."""

    __slots__ = ("_strip", "_width", "cells", "event")

    def __init__(self, cells: list[tuple[str, str]], event: dict[str, Any]) -> None:
        self.cells = cells
        self.event = event
        self._strip: Strip | None = None
        self._width = -1

    def strip(self, width: int, base: Style | None = None) -> Strip:
        if self._strip is None or self._width != width:
            segments = []
            for (text, style), size in zip(self.cells, widths(width), strict=True):
                if size:
                    text = text[:size].ljust(size) + GAP
                cell_style = _style(style)
                if base is not None:
                    cell_style = base + cell_style if cell_style else base
                segments.append(Segment(text, cell_style))
            self._strip = Strip(segments).crop_extend(0, width, None)
            self._width = width
        return self._strip


@functools.lru_cache(maxsize=64)
def _style(name: str) -> Style | None:
    return Style.parse(name) if name else None
