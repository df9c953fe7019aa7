"""What the dashboard shows, without Textual: its tables (the triggers, workers and
queues views have the same columns and cells as ``iii list``), the header line, which
events the live log shows, and how a flood is sampled. :class:`~iii_cli.tui.app.IIIApp`
only renders what this computes, so all of it is unit-tested without a pilot.
"""

from __future__ import annotations

import collections
import fnmatch
import json
import os
import time
from pathlib import Path
from typing import Any

from iii_cli.events_view import status_of
from iii_cli.list_view import KINDS, add_display_columns
from iii_cli.output import ID_COLUMNS, cell
from iii_cli.style import printable

#: How long the header says it shows a sample after the daemon last left events out.
SAMPLED_SHOWN_S = 3.0
#: Events kept for the detail pane, export and re-run (the log's rows and a margin).
KEPT = 2_000
#: Rows added to the log per batch at most: in a flood the log shows the newest
#: (nobody reads thousands of rows a second; every event stays for detail and export).
ROWS_PER_BATCH = 50
#: The views that show what ``iii list KIND`` lists: table id -> kind.
LIST_VIEWS = {"triggers-table": "triggers", "workers-table": "workers",
              "queues-table": "queues"}
#: The functions table of the live view: ``iii list functions`` with each function's
#: calls (``engine::functions::stats``) and observers.
FUNCTION_COLUMNS = ("FUNCTION", "WORKER", "CALLS", "ERRORS", "P50 MS", "P95 MS",
                    "LAST MINUTE", "OBSERVERS")
#: What the log shows with "errors only".
FAILED_STATUSES = frozenset({"error", "skip", "retry", "dead", "refused", "missed"})
SPARKS = " ▁▂▃▄▅▆▇█"

#: A table row: the id it stands for, as the daemon spells it (what an action on the
#: row uses), and its cells as shown (escaped).
Row = tuple[str, tuple[str, ...]]


def sparkline(counts: list[int], width: int = 20) -> str:
    """Calls per second as ``width`` marks: all of ``counts`` (the last minute), several
    seconds a mark when there are more seconds than marks (60 s: 3 s a mark)."""
    step = max(1, -(-len(counts) // width))
    start = len(counts) - step * (len(counts) // step)
    recent = [sum(counts[i:i + step]) for i in range(start, len(counts), step)]
    top = max(recent, default=0)
    if not top:
        return "·" * len(recent)
    return "".join(SPARKS[min(8, round(8 * c / top))] for c in recent)


def list_columns(kind: str) -> list[str]:
    """The column titles ``iii list KIND`` shows."""
    return [title for _, title in KINDS[kind][2]]


def list_rows(kind: str, rows: list[dict[str, Any]]) -> list[Row]:
    """The cells ``iii list KIND`` shows for ``rows`` (as the daemon answered them),
    each row keyed by its first column's value."""
    add_display_columns(kind, rows, _no_calls)
    keys = [key for key, _ in KINDS[kind][2]]
    return [(str(row.get(keys[0])),
             tuple(cell(row.get(key), key in ID_COLUMNS) for key in keys)) for row in rows]


def _no_calls(function_id: str) -> Any:
    raise AssertionError(f"the dashboard's views need no more calls ({function_id})")


def _ms(value: Any) -> str:
    return "" if value is None else f"{value:.2f}"


class Dashboard:
    """The dashboard's state: the events it has, what the log shows of them, the last
    poll, and the header that sums it up."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=KEPT)
        #: Events in since the last batch (added to the log every BATCH_S).
        self.incoming: list[dict[str, Any]] = []
        self.paused = False
        #: Events the log would show that came while paused.
        self.unseen = 0
        self.errors_only = False
        self.function_filter = ""
        #: The payload last sent to each function with ``t``.
        self.last_payload: dict[str, str] = {}
        #: ``connecting``, ``connected`` or ``reconnecting``.
        self.state = "connecting"
        self.status: dict[str, Any] = {}
        #: The observers, as last polled (engine::observers::list).
        self.observers: list[dict[str, Any]] = []
        self.rate = 0.0
        #: Events the daemon left out of the sample lately, and when it last did.
        self.skipped = 0
        self.sampled_at = -1e9

    # --- events ---------------------------------------------------------------------------

    def on_event(self, event: dict[str, Any], now: float, keep: int) -> bool:
        """An event from the stream; True when it starts a new stream (a (re)connection:
        the log starts over with the replay that follows). ``keep``: the log's rows (a
        flood keeps only the newest few times that many waiting)."""
        kind = event.get("event")
        if kind == "sampled":  # a flood: told in the header, not a row
            if now - self.sampled_at > SAMPLED_SHOWN_S:
                self.skipped = 0
            self.skipped += int(event.get("skipped") or 0)
            self.sampled_at = now
            return False
        if kind == "watching":
            self.state = "connected"
            self.incoming.clear()
            self.events.clear()
            return True
        self.incoming.append(event)
        if len(self.incoming) > 4 * keep:
            del self.incoming[:len(self.incoming) - keep]
        return False

    def wanted(self, event: dict[str, Any]) -> bool:
        """Whether the log shows ``event`` (errors only, the function filter)."""
        if self.errors_only and status_of(event) not in FAILED_STATUSES:
            return False
        if self.function_filter:
            return fnmatch.fnmatchcase(str(event.get("function_id") or ""),
                                       self.function_filter)
        return True

    def take_batch(self) -> list[dict[str, Any]]:
        """The events in since the last batch that the log adds now (none while paused:
        they are counted as unseen)."""
        batch, self.incoming = self.incoming, []
        self.events.extend(batch)
        if self.paused:
            self.unseen += sum(1 for e in batch if self.wanted(e))
            return []
        return [e for e in batch if self.wanted(e)][-ROWS_PER_BATCH:]

    def shown(self, last: int | None = None) -> list[dict[str, Any]]:
        """The events the log shows (the ``last`` of them): after a change of filter,
        and what ``x`` exports."""
        shown = [e for e in self.events if self.wanted(e)]
        return shown if last is None else shown[-last:]

    def export(self, directory: Path) -> tuple[Path, int]:
        """Write the events the log shows to a new JSONL file in ``directory`` (made
        private if missing), readable by the user alone; return the file and how many."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        shown = self.shown()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(100):  # two exports in one second get two files
            path = directory / f"iii-events-{stamp}{f'-{n}' if n else ''}.jsonl"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("".join(json.dumps(e) + "\n" for e in shown))
            return path, len(shown)
        raise FileExistsError(f"{directory} has 100 exports from {stamp} already")

    def toggle_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self.unseen = 0

    # --- the poll -------------------------------------------------------------------------

    def polled(self, status: dict[str, Any], stats: list[dict[str, Any]],
               observers: list[dict[str, Any]]) -> None:
        self.status, self.observers = status, observers
        self.rate = sum(row["rate_per_s"] for row in stats)

    def function_rows(self, functions: list[dict[str, Any]], stats: list[dict[str, Any]],
                      workers: list[dict[str, Any]]) -> list[Row]:
        """The live view's functions table (workers' functions, not the daemon's)."""
        names = {w["id"]: w.get("name") or w["id"][:8] for w in workers}
        by_id = {row["function_id"]: row for row in stats}
        observed = collections.Counter(o["function_id"] for o in self.observers)
        rows: list[Row] = []
        for f in functions:
            if f["function_id"].startswith("engine::") or f.get("worker_id") is None:
                continue
            st = by_id.get(f["function_id"], {})
            rows.append((f["function_id"], (
                cell(f["function_id"], True), printable(str(names.get(f["worker_id"], ""))),
                str(st.get("calls", 0)), str(st.get("errors", 0)),
                _ms(st.get("p50_ms")), _ms(st.get("p95_ms")),
                sparkline(st.get("per_second") or [0] * 20),
                str(observed.get(f["function_id"], "")))))
        return rows

    def observers_of(self, function_id: Any) -> list[dict[str, Any]]:
        return [o for o in self.observers if o["function_id"] == function_id]

    # --- the header -----------------------------------------------------------------------

    def header(self, now: float) -> str:
        """The header line, in Rich markup (everything from the daemon escaped)."""
        s = self.status
        state = {"connected": "[green]● connected[/]", "connecting": "[yellow]○ connecting[/]",
                 "reconnecting": "[red]○ daemon not answering, retrying[/]"}[self.state]
        counts = (f"{s.get('workers', 0)} workers  {s.get('functions', 0)} functions  "
                  f"{s.get('triggers', 0)} triggers  {self.rate:.1f} calls/s") if s else ""
        sampled = now - self.sampled_at <= SAMPLED_SHOWN_S
        flags = "  ".join(f for f in (
            f"[b]sample ({self.skipped} left out)[/]" if sampled else "",
            f"[b]paused: {self.unseen} new[/]" if self.paused else "",
            "[b]errors only[/]" if self.errors_only else "",
            f"[b]filter {_markup(self.function_filter)}[/]" if self.function_filter else "")
            if f)
        version = _markup(str(s.get("version", "")))
        return f" iii {version}  {state}  {_markup(self.address)}  {counts}  {flags}"


def _markup(text: str) -> str:
    """Text from elsewhere inside Rich markup: control characters and ``[`` escaped."""
    return printable(text).replace("[", r"\[")
