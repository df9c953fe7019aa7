"""``iii list KIND``: what each kind lists and how its table reads, and the fast path
that runs the command without loading typer (``iii list`` is typed in loops, as
``iii trigger`` is: 136 ms a call instead of 270, median of 10).

The fast path takes ``iii list KIND [-o FMT] [--socket PATH] [--url URL] [--all]``;
anything else (``--help``, a mistake, completion) goes to the typer command, which says
what is wrong better. Both share :data:`KINDS` and :func:`add_display_columns`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

QUEUE_COLUMNS = [("queue", "QUEUE"), ("function_id", "FUNCTION"), ("ready", "READY"),
                 ("in_flight", "IN FLIGHT"), ("delayed", "DELAYED"),
                 ("waiting_for_function", "WAITING"), ("dead_letters", "DEAD"),
                 ("delivered", "DELIVERED")]

#: kind -> (daemon function, key of its rows, table columns)
KINDS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "functions": ("engine::functions::list", "functions",
                  [("function_id", "FUNCTION"), ("worker_name", "WORKER"),
                   ("description", "DESCRIPTION")]),
    "workers": ("engine::workers::list", "workers",
                [("name", "NAME"), ("id", "ID"), ("pid", "PID"), ("transport", "TRANSPORT"),
                 ("function_count", "FUNCTIONS"), ("active_invocations", "ACTIVE"),
                 ("connected_at", "CONNECTED"), ("managed_as", "MANAGED")]),
    "actions": ("engine::actions::list", "actions",
                [("id", "ACTION"), ("function_id", "FUNCTION"), ("worker", "WORKER"),
                 ("description", "DESCRIPTION")]),
    "triggers": ("engine::registered-triggers::list", "registered_triggers",
                 [("id", "ID"), ("trigger_type", "TYPE"), ("function_id", "FUNCTION"),
                  ("status", "STATUS"), ("worker_name", "OWNER"), ("config", "CONFIG")]),
    "trigger-types": ("engine::triggers::list", "triggers",
                      [("id", "TYPE"), ("worker_name", "PROVIDER"),
                       ("trigger_count", "TRIGGERS"), ("description", "DESCRIPTION")]),
    "queues": ("engine::queues::list", "queues", QUEUE_COLUMNS),
    "observers": ("engine::observers::list", "observers",
                  [("id", "ID"), ("function_id", "FUNCTION"), ("target", "TARGET"),
                   ("on", "ON"), ("state", "STATE"), ("fires", "FIRES"),
                   ("worker", "OWNER"), ("filters", "FILTERS")]),
}


def add_display_columns(kind: str, rows: list[dict[str, Any]],
                        call: Callable[[str], Any]) -> None:
    """Table-only columns: the daemon's own shown as such, an http trigger's URL, an
    HTTP-invoked function's, owner names for actions and observers (their rows name the
    worker by id; ``call(function_id)`` asks the daemon)."""
    if kind in ("functions", "triggers", "trigger-types"):
        for row in rows:
            invocation = row.get("invocation")
            if invocation:  # an HTTP-invoked function: where the daemon calls it
                row["description"] = " ".join(filter(None, (
                    invocation["method"], invocation["url"], row.get("description"))))
            row["worker_name"] = {"daemon": "(daemon)", None: "(nobody)"}.get(
                row["worker_name"], row["worker_name"])
            if kind == "triggers":  # the summary, or where an http trigger answers
                row["config"] = row.get("url") or row["config_summary"]
                if row.get("url"):
                    method = str(row["config_summary"]).partition(" ")[0]
                    row["config"] = f"{method} {row['url']}"
        return
    if kind == "workers":  # the managed worker whose process it is, and how that is
        for row in rows:
            row["managed_as"] = f"{row['managed']} ({row.get('managed_status')})" \
                if row.get("managed") else ""
        return
    if kind not in ("actions", "observers"):
        return
    workers = call("engine::workers::list")["workers"]
    names = {w["id"]: w["name"] or w["id"][:8] for w in workers}
    for row in rows:
        row["worker"] = names.get(row["worker_id"], str(row["worker_id"])[:8])


_FORMATS = ("table", "json", "jsonl")


def fast(argv: list[str]) -> int | None:
    """``iii list ...`` (``argv`` after ``list``) run at once; None when typer should
    take it."""
    from iii_cli.fast_args import split_args

    split = split_args(argv, ("-o", "--output", "--socket", "--url"), ("--all",))
    if split is None:
        return None
    kinds, options, switches = split
    if len(kinds) != 1 or kinds[0] not in KINDS or \
            options.get("--output", "table") not in _FORMATS:
        return None
    return _run(kinds[0], options, "--all" in switches)


def _run(kind: str, options: dict[str, str], internal: bool) -> int:
    from pathlib import Path

    from iii_cli import output
    from iii_cli.daemon_call import call_daemon, target_of
    from iii_cli.trigger_fast import fail

    socket = options.get("--socket")  # else III_SOCKET, config, default: socket_of
    target = target_of(Path(socket) if socket else None,
                       options.get("--url") or os.environ.get("III_URL"), fail)

    def call(function_id: str, data: Any = None) -> Any:
        return call_daemon(target, function_id, data, fail)

    function_id, key, columns = KINDS[kind]
    rows: list[dict[str, Any]] = call(function_id, {"include_internal": True}
                                      if internal else None)[key]
    chosen = options.get("--output") or output.default_format()
    if chosen == "table":
        add_display_columns(kind, rows, call)
    sys.stdout.write(output.render(rows, columns, chosen) + "\n")
    return 0
