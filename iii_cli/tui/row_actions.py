"""The dashboard's keys that act on the selected row of a view: redrive a queue (``r``),
fire a trigger (``f``), restart a managed worker (``R``)."""

from __future__ import annotations

import json
from typing import Any, Protocol, TypeVar, cast

from textual import work
from textual.widget import Widget
from textual.widgets import DataTable, TabbedContent

from iii_cli.style import printable
from iii_sdk.client.streaming import Calls
from iii_sdk.errors import IIIError

W = TypeVar("W", bound=Widget)


class Host(Protocol):
    """What these keys need of the dashboard app."""

    calls: Calls

    def widget(self, selector: str, kind: type[W]) -> W: ...

    def _selected_id(self, table: DataTable[Any]) -> str | None: ...

    def notify(self, message: str, *, severity: Any = ...) -> None: ...

    def poll(self) -> Any: ...

#: The dashboard's views, in the order of their number keys.
VIEWS = ("live", "triggers", "workers", "queues")


async def ask(app: Host, label: str, function_id: str, data: Any) -> tuple[bool, Any]:
    """Call ``function_id`` for a key: (True, its result), or (False, None) once the app
    said why."""
    try:
        return True, await app.calls.call(function_id, data, timeout_s=30)
    except IIIError as exc:
        app.notify(printable(f"{label}: {exc}"), severity="error")
        return False, None


def _selected_in(app: Host, view: str, what: str) -> str | None:
    """The id of the selected row of ``view``'s table, or None (the app said why)."""
    selected = app._selected_id(app.widget(f"#{view}-table", DataTable))
    if app.widget("#tabs", TabbedContent).active != view or selected is None:
        app.notify(f"select {what} in the {view} view ({VIEWS.index(view) + 1})",
                   severity="warning")
        return None
    return selected


class RowActions:
    @work(group="calls")
    async def action_redrive(self) -> None:
        app = cast(Host, self)
        queue = _selected_in(app, "queues", "a queue to redrive")
        if queue is None:
            return
        ok, answer = await ask(app, queue, "engine::queues::redrive", {"queue": queue})
        if ok:
            app.notify(printable(f"redrove {answer['redriven']} dead letters of {queue}"))
            app.poll()

    @work(group="calls")
    async def action_fire(self) -> None:
        """Fire the selected trigger by hand (engine::triggers::fire, source manual)."""
        app = cast(Host, self)
        trigger_id = _selected_in(app, "triggers", "a trigger to fire")
        if trigger_id is None:
            return
        ok, result = await ask(app, trigger_id, "engine::triggers::fire", {"id": trigger_id})
        if ok:
            app.notify(printable(f"fired {trigger_id} -> {json.dumps(result)[:200]}"))

    @work(group="calls")
    async def action_restart(self) -> None:
        """Restart the managed worker whose process the selected worker is."""
        app = cast(Host, self)
        selected = _selected_in(app, "workers", "a managed worker to restart")
        if selected is None:
            return
        ok, answer = await ask(app, selected, "engine::workers::list", None)
        if not ok:
            return
        managed = next((w.get("managed") for w in answer["workers"]
                        if selected in (w.get("name"), w.get("id"))), None)
        if managed is None:
            app.notify(printable(f"{selected} is not a managed worker (iii worker add)"),
                       severity="warning")
            return
        if (await ask(app, managed, "engine::managed::restart", {"name": managed}))[0]:
            app.notify(printable(f"restarted {managed}"))
            app.poll()
