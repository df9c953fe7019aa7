"""``iii tui``: a Textual dashboard over the daemon's socket.

A thin shell: what it shows is computed by the headless model (:mod:`iii_cli.dashboard`)
from what the headless client (:mod:`iii_sdk.client.streaming`) brings in. The event stream feeds
the live log; a poll once a second feeds the header, the functions table (with each
function's last minute as a sparkline) and the triggers, workers and queues views. Events
are added in batches (every ``BATCH_S``) and the log keeps ``LOG_ROWS`` rows; past
``SAMPLE_PER_S`` events a second the daemon sends a sample (every failure, some of the
rest) and the header says so. A flood never freezes it nor takes the CPU the daemon and
its workers need. It reconnects by itself when the daemon restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar, TypeVar

from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from iii_cli.dashboard import (
    FUNCTION_COLUMNS,
    LIST_VIEWS,
    Dashboard,
    Row,
    list_columns,
    list_rows,
)
from iii_cli.events_view import clock_of, detail_of, status_of
from iii_cli.list_view import KINDS
from iii_cli.style import printable
from iii_cli.tui.log_view import LogView
from iii_cli.tui.row_actions import RowActions, ask
from iii_sdk.client.streaming import Calls, watch
from iii_sdk.errors import ConnectionFailed, IIIError
from iii_sdk.paths import resolve_data_dir

#: Live events a second the daemon sends at most (failures always come): a sample
#: under a flood, where thousands a second would only cost the machine's CPU; the
#: function table's counts come from the daemon's stats and stay exact.
SAMPLE_PER_S = 500
#: How often queued events are added to the log, and how many rows it keeps.
BATCH_S = 0.2
LOG_ROWS = 500
POLL_S = 1.0
W = TypeVar("W", bound=Widget)


def pretty_json(text: str | None) -> Syntax | Text:
    """A payload or result preview as highlighted JSON (as text when it was cut)."""
    if text is None:
        return Text("—")
    try:
        value = json.loads(text)
    except ValueError:
        return Text(printable(text))
    return Syntax(json.dumps(value, indent=2, ensure_ascii=False), "json",
                  theme="ansi_dark", word_wrap=True)


class DetailScreen(ModalScreen[None]):
    """One event: its fields, payload, result, error and stack."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,enter", "dismiss", "Close")]

    def __init__(self, event: dict[str, Any],
                 observers: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__()
        self.event = event
        #: The observers of the event's function (``engine::observers::list`` rows).
        self.observers = observers

    def compose(self) -> ComposeResult:
        e = self.event
        facts = " ".join(f"{k}={printable(str(e.get(k)))}" for k in (
            "event", "function_id", "source", "action", "status", "duration_ms",
            "worker_id", "invocation_id", "trigger_id") if e.get(k) is not None)
        with Vertical(id="detail"):
            yield Static(facts, id="facts")
            yield Static("payload", classes="title")
            yield Static(pretty_json(e.get("payload")), id="payload")
            yield Static("result", classes="title")
            yield Static(pretty_json(e.get("result")), id="result")
            if e.get("error"):
                yield Static("error", classes="title")
                yield Static(pretty_json(json.dumps(e["error"])), id="error")
            if e.get("stacktrace"):
                yield Static(Text(printable(str(e["stacktrace"]))), id="stack")
            if self.observers:
                yield Static("observed by", classes="title")
                yield Static(Text(printable("\n".join(
                    f"{o['id']} -> {o['target']}  on {o['on']}  {o['state']}  "
                    f"{o['fires']} fires  {json.dumps(o['filters'])}"
                    for o in self.observers))), id="observers")


class PayloadScreen(ModalScreen[str | None]):
    """Ask for a payload (JSON) to trigger a function with."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss", "Cancel")]

    def __init__(self, function_id: str, last: str) -> None:
        super().__init__()
        self.function_id, self.last = function_id, last

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt"):
            yield Static(f"trigger {printable(self.function_id)} with (JSON):")
            yield Input(value=self.last, id="payload-input")

    def on_input_submitted(self, message: Input.Submitted) -> None:
        self.dismiss(message.value)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss",
                                                     "Close")]

    def compose(self) -> ComposeResult:
        rows = [f"{self.app.get_key_display(b):>8}  {b.description}" for b in IIIApp.BINDINGS
                if isinstance(b, Binding)]  # as typed: "?", "/", not their key names
        yield Static("\n".join(["keys", "", *rows, "", "ctrl+p  command palette"]),
                     id="help")


class Actions(Provider):
    """The command palette (ctrl+p) lists the same actions as the keys."""

    def _actions(self) -> list[tuple[str, str, str]]:
        return [(b.description, b.action, f"key {b.key}") for b in IIIApp.BINDINGS
                if isinstance(b, Binding) and b.description and b.action != "quit"]

    async def discover(self) -> Hits:
        for name, action, help_text in self._actions():
            yield DiscoveryHit(name, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, action, help_text in self._actions():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self.app.run_action, action),
                          help=help_text)


APP_CSS = """
#header { height: 1; background: $boost; }
#tabs { height: 1fr; }
TabPane { height: 1fr; padding: 0; }
#functions { height: 40%; }
#log { height: 1fr; }
#filter { dock: bottom; display: none; }
#filter.shown { display: block; }
DetailScreen, PayloadScreen, HelpScreen { align: center middle; }
#detail, #prompt, #help { width: 90%; height: auto; max-height: 90%;
                          border: round $accent; background: $surface; padding: 0 1; }
.title { color: $accent; text-style: bold; }
"""


class IIIApp(RowActions, App[None]):
    """The dashboard."""

    COMMANDS = App.COMMANDS | {Actions}

    TITLE = "iii"
    CSS = APP_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("space", "pause", "Pause"),
        Binding("e", "errors", "Errors only"),
        Binding("slash", "filter", "Filter"),
        Binding("enter", "detail", "Detail", show=False),
        Binding("t", "trigger", "Trigger"),
        Binding("a", "again", "Re-run"),
        Binding("r", "redrive", "Redrive"),
        Binding("f", "fire", "Fire trigger"),
        Binding("R", "restart", "Restart worker"),
        Binding("y", "copy", "Copy JSON"),
        Binding("x", "export", "Export"),
        Binding("1", "tab('live')", "Live", show=False),
        Binding("2", "tab('triggers')", "Triggers", show=False),
        Binding("3", "tab('workers')", "Workers", show=False),
        Binding("4", "tab('queues')", "Queues", show=False),
    ]

    def __init__(self, socket_path: str) -> None:
        super().__init__()
        self.socket_path = socket_path
        self.calls = Calls(socket_path)
        #: Everything shown, computed without Textual.
        self.model = Dashboard(socket_path)
        #: The ids the rows of each table stand for, by table id.
        self._row_ids: dict[str, list[str]] = {}

    # --- layout ---------------------------------------------------------------------------

    def widget(self, selector: str, kind: type[W]) -> W:
        """A widget of the main screen, whichever screen is on top (``query_one`` would
        look in a detail or help screen open over it)."""
        if not self.screen_stack:  # closing: the screens are gone already
            raise NoMatches(f"no screen to find {selector} on")
        return self.screen_stack[0].query_one(selector, kind)

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        with TabbedContent(initial="live", id="tabs"):
            with TabPane("1 Live", id="live"):
                yield DataTable(id="functions", cursor_type="row")
                yield LogView(LOG_ROWS, id="log")
            with TabPane("2 Triggers", id="triggers"):
                yield DataTable(id="triggers-table", cursor_type="row")
            with TabPane("3 Workers", id="workers"):
                yield DataTable(id="workers-table", cursor_type="row")
            with TabPane("4 Queues", id="queues"):
                yield DataTable(id="queues-table", cursor_type="row")
        yield Input(placeholder="function glob (enter to apply, empty for all)", id="filter",
                    disabled=True)  # hidden until `/`: it must not take the keys
        yield Footer()

    def on_mount(self) -> None:
        self.widget("#functions", DataTable).add_columns(*FUNCTION_COLUMNS)
        for table_id, kind in LIST_VIEWS.items():  # as `iii list KIND` shows them
            self.widget(f"#{table_id}", DataTable).add_columns(*list_columns(kind))
        self._render_header()
        self.widget("#log", LogView).focus()
        self.follow_events()
        self.set_interval(BATCH_S, self._add_batch)
        self.set_interval(POLL_S, self.poll)
        self.poll()

    # --- data in --------------------------------------------------------------------------

    @work(exclusive=True, group="events")
    async def follow_events(self) -> None:
        with contextlib.suppress(NoMatches):  # the app closed while it followed
            await self._follow_events()

    async def _follow_events(self) -> None:
        """The event stream, reconnecting (with the recent history) after a restart."""
        while True:
            try:
                async for event in watch(self.socket_path, {"max_rate": SAMPLE_PER_S},
                                         LOG_ROWS):
                    if self.model.on_event(event, time.monotonic(), LOG_ROWS):
                        # (Re)connected: its replay follows, in place of what we had.
                        self.widget("#log", LogView).clear()
                        self._render_header()
            except (ConnectionFailed, IIIError, OSError):
                pass
            self.model.state = "reconnecting"
            self._render_header()
            await asyncio.sleep(1.0)

    @work(exclusive=True, group="poll")
    async def poll(self) -> None:
        with contextlib.suppress(NoMatches):  # the app closed while it asked
            await self._poll()

    async def _poll(self) -> None:
        try:
            if not self.calls.connected:
                await self.calls.open()
            status = await self.calls.call("engine::status")
            stats = (await self.calls.call("engine::functions::stats"))["functions"]
            views = {}
            for kind in ("functions", *LIST_VIEWS.values()):  # workers: one of these
                function_id, key, _ = KINDS[kind]
                views[kind] = (await self.calls.call(function_id))[key]
            observers = (await self.calls.call("engine::observers::list"))["observers"]
        except (ConnectionFailed, IIIError, OSError, KeyError, TypeError):
            self.model.state = "reconnecting"
            await self.calls.close()
            self.calls = Calls(self.socket_path)
            self._render_header()
            return
        self.model.polled(status, stats, observers)
        self._render_header()
        self._fill(self.widget("#functions", DataTable), self.model.function_rows(
            views["functions"], stats, views["workers"]))
        for table_id, kind in LIST_VIEWS.items():
            self._fill(self.widget(f"#{table_id}", DataTable),
                       list_rows(kind, views[kind]))

    # --- rendering ------------------------------------------------------------------------

    def _render_header(self) -> None:
        self.widget("#header", Static).update(self.model.header(time.monotonic()))

    def _fill(self, table: DataTable[Any], rows: Sequence[Row]) -> None:
        """Replace a table's rows, keeping the cursor on the same row number; the ids
        the rows stand for are kept for the actions on them (the cells are escaped)."""
        keep = table.cursor_row
        table.clear()
        self._row_ids[str(table.id)] = [row_id for row_id, _ in rows]
        for _, cells in rows:
            table.add_row(*(Text(cell) for cell in cells))
        if rows:
            table.move_cursor(row=min(keep, len(rows) - 1))

    def _selected_id(self, table: DataTable[Any]) -> str | None:
        """The id of the row under the cursor (a function id, a queue name), as the
        daemon spells it."""
        ids = self._row_ids.get(str(table.id), [])
        return ids[table.cursor_row] if 0 <= table.cursor_row < len(ids) else None

    def _add_batch(self) -> None:
        with contextlib.suppress(NoMatches):  # the app is closing
            self._add_batch_now()

    def _add_batch_now(self) -> None:
        waiting = bool(self.model.incoming)
        rows = self.model.take_batch()
        if self.model.paused:
            if waiting:
                self._render_header()  # counts what is new
            return
        self._append_rows(rows)

    def _append_rows(self, events: list[dict[str, Any]]) -> None:
        """Add rows at the bottom (the log keeps the newest LOG_ROWS)."""
        self.widget("#log", LogView).add_rows((_cells(event), event) for event in events)

    def _redraw_log(self) -> None:
        self.widget("#log", LogView).clear()
        self._append_rows(self.model.shown(LOG_ROWS))

    def _selected_event(self) -> dict[str, Any] | None:
        log = self.widget("#log", LogView)
        return log.event_at(log.cursor_row)

    def on_log_view_selected(self, message: LogView.Selected) -> None:
        self.action_detail()

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        if message.data_table.id == "functions":
            self.action_trigger()

    # --- actions --------------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_tab(self, tab: str) -> None:
        self.widget("#tabs", TabbedContent).active = tab
        # Focus follows (a focused widget in another pane would switch it back).
        if tab == "live":
            self.widget("#log", LogView).focus()
        else:
            self.widget(f"#{tab}-table", DataTable).focus()

    def action_pause(self) -> None:
        self.model.toggle_pause()
        if not self.model.paused:
            self._redraw_log()
        self._render_header()

    def action_errors(self) -> None:
        self.model.errors_only = not self.model.errors_only
        self._redraw_log()
        self._render_header()

    def action_filter(self) -> None:
        box = self.widget("#filter", Input)
        box.disabled = False
        box.add_class("shown")
        box.value = self.model.function_filter
        box.focus()

    def on_input_submitted(self, message: Input.Submitted) -> None:
        if message.input.id != "filter":
            return
        self.model.function_filter = message.value.strip()
        message.input.remove_class("shown")
        message.input.disabled = True
        self.widget("#log", LogView).focus()
        self._redraw_log()
        self._render_header()

    def action_detail(self) -> None:
        event = self._selected_event()
        if event is not None:
            self.push_screen(DetailScreen(event,
                                          self.model.observers_of(event.get("function_id"))))

    def action_copy(self) -> None:
        event = self._selected_event()
        if event is not None:
            self.copy_to_clipboard(json.dumps(event))
            self.notify("copied the event as JSON")

    def action_export(self) -> None:
        """Into the user's data dir (exports/), never the current directory unasked."""
        try:
            path, count = self.model.export(resolve_data_dir() / "exports")
        except OSError as exc:
            self.notify(printable(f"could not export: {exc}"), severity="error")
            return
        self.notify(printable(f"wrote {count} events to {path}"))

    def action_trigger(self) -> None:
        function_id = self._selected_id(self.widget("#functions", DataTable))
        if function_id is None:
            self.notify("no function to trigger", severity="warning")
            return

        def chosen(payload: str | None) -> None:
            if payload is not None:
                self.model.last_payload[function_id] = payload
                self.run_call(function_id, payload)

        self.push_screen(PayloadScreen(function_id,
                                       self.model.last_payload.get(function_id, "{}")),
                         chosen)

    def action_again(self) -> None:
        """Re-run the selected invocation with its payload (when the preview is whole)."""
        event = self._selected_event()
        if event is None or event.get("event") != "invocation.finished":
            self.notify("select an invocation to run again", severity="warning")
            return
        payload = str(event.get("payload") or "null")
        if payload.endswith("…"):
            self.notify("its payload was too large to keep; use t", severity="warning")
            return
        self.run_call(str(event["function_id"]), payload)

    @work(group="calls")
    async def run_call(self, function_id: str, payload: str) -> None:
        try:
            data = json.loads(payload) if payload.strip() else None
        except ValueError as exc:
            self.notify(f"not JSON: {exc}", severity="error")
            return
        ok, result = await ask(self, function_id, function_id, data)
        if ok:
            self.notify(printable(f"{function_id} -> {json.dumps(result)[:200]}"))


def _duration(event: dict[str, Any]) -> str:
    value = event.get("duration_ms")
    return f"{value:.2f}" if isinstance(value, int | float) else ""


STATUS_COLOURS = {"ok": "green", "error": "red", "skip": "yellow", "retry": "yellow",
                  "dead": "red", "missed": "magenta"}


def _cells(event: dict[str, Any]) -> list[tuple[str, str]]:
    """A log row: (text, style) per column of LogView."""
    status = status_of(event)
    return [(clock_of(event), ""), (status, STATUS_COLOURS.get(status, "")),
            (_duration(event), ""), (printable(str(event.get("function_id") or "-")), ""),
            (printable(str(event.get("source") or "")), ""),
            (printable(detail_of(event))[:200], "")]
