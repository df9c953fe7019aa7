"""How an event reads as one line: what ``iii watch`` prints and the TUI's log shows.

``time  STATUS  DURATION  FUNCTION  SOURCE  detail``: the status says the kind (ok and
error for invocations, run, fire, skip, join, left, retry, dead, missed, obs), the duration
is right-aligned in ms, colour only where wanted; every value from the daemon is escaped
for the terminal.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from iii_cli.style import printable

#: What each kind shows in the status column (invocations show ok / error).
_STATUS = {"invocation.started": "run", "trigger.fired": "fire", "trigger.skipped": "skip",
           "registration": "reg",
           "worker.joined": "join", "worker.left": "left", "registration.refused": "refused",
           "queue.retry": "retry", "queue.dead_letter": "dead", "missed": "missed",
           "observer.changed": "obs", "observer.skipped": "skip",
           "managed.started": "start", "stream.joined": "join", "stream.left": "left",
           "stream.refused": "refused"}
_COLOURS = {"ok": "32", "error": "31", "skip": "33", "retry": "33", "dead": "31",
            "refused": "31", "missed": "35", "fire": "36", "run": "2"}


def status_of(event: dict[str, Any]) -> str:
    kind = str(event.get("event"))
    if kind == "invocation.finished":
        return "ok" if event.get("status") == "ok" else "error"
    if kind == "observer.changed" and event.get("state") == "error":
        return "error"  # a refused observer is a failure (errors only shows it)
    if kind == "managed.exited":
        return "error" if event.get("error") else str(event.get("status") or "exited")
    return _STATUS.get(kind, kind.rpartition(".")[2])


def detail_of(event: dict[str, Any]) -> str:
    """The most telling thing about an event, short."""
    kind = event.get("event")
    error = event.get("error")
    if kind == "managed.exited" and isinstance(error, dict):
        then = f", restart in {event['restart_in_s']} s" \
            if event.get("restart_in_s") is not None else f", {event.get('status')}"
        return f"{error.get('message')}{then}"
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')}"
    if kind in ("trigger.skipped", "observer.skipped"):
        return str(event.get("reason"))
    if kind == "observer.changed":
        reason = event.get("reason")
        why = f" ({reason.get('code')})" if isinstance(reason, dict) else ""
        return f"{event.get('id')} -> {event.get('target')}: {event.get('state')}{why}"
    if kind in ("trigger.fired",):
        return f"{event.get('trigger_type')} {event.get('trigger_id')}"
    if kind in ("worker.joined", "worker.left"):
        return f"{event.get('name') or ''} {event.get('worker_id')}".strip()
    if kind == "registration":
        return f"{event.get('what')} {event.get('id')}"
    if kind == "registration.refused":
        return f"{event.get('what')} {event.get('id')}: {event.get('reason')}"
    if kind == "queue.retry":
        return f"{event.get('queue')} attempt {event.get('attempt')}"
    if kind == "queue.dead_letter":
        return f"{event.get('queue')} after {event.get('attempts')} attempts"
    if kind in ("stream.joined", "stream.left", "stream.refused"):
        item = f"/{event.get('id')}" if event.get("id") is not None else ""
        why = f": {event.get('reason')}" if kind == "stream.refused" else ""
        return f"{event.get('stream_name')}/{event.get('group_id')}{item} " \
               f"{event.get('subscription_id')} from {event.get('client')}{why}"
    if kind == "missed":
        return f"{event.get('count')} events dropped: this watcher was too slow"
    if kind == "managed.started":
        return f"{event.get('name')} pid {event.get('pid')}"
    if kind == "managed.exited":
        return f"{event.get('name')} exited (code {event.get('code')}): {event.get('status')}"
    if kind == "invocation.finished":
        return str(event.get("result") or "")
    return ""


def clock_of(event: dict[str, Any]) -> str:
    stamp = event.get("time")
    if not isinstance(stamp, int | float):
        return " " * 12
    return datetime.fromtimestamp(stamp).strftime("%H:%M:%S.%f")[:12]


def duration_of(event: dict[str, Any]) -> str:
    duration = event.get("duration_ms")
    return f"{duration:10.3f}ms" if isinstance(duration, int | float) else " " * 12


def line(event: dict[str, Any], colour: bool = False, width: int | None = None) -> str:
    """One event as one line; cut to ``width`` characters where that leaves the detail
    some room (None: never cut)."""
    status = status_of(event)
    shown = f"{status:<7}"
    if colour and status in _COLOURS:
        shown = f"\x1b[{_COLOURS[status]}m{shown}\x1b[0m"
    function_id = printable(str(event.get("function_id") or "-"))
    source = printable(str(event.get("source") or ""))
    text = f"{clock_of(event)}  {shown} {duration_of(event)}  {function_id:<24} {source:<14} "
    detail = printable(detail_of(event)).replace("\n", " ")
    visible = len(text) - (len(shown) - 7 if colour else 0)
    room = (width or 0) - visible
    if width is None or room < 20 or len(detail) <= room:
        return text + detail
    return text + detail[:room - 1] + "…"
