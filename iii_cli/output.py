"""Rendering results: tables on a terminal, JSON or JSON lines for scripts."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from iii_cli.style import printable, unambiguous


def default_format(stream: TextIO = sys.stdout) -> str:
    return "table" if stream.isatty() else "json"


#: Columns that hold ids: shown unambiguously (see :func:`unambiguous`) and never cut
#: short, so two different ids never look the same.
ID_COLUMNS = frozenset({"id", "function_id", "target", "queue", "trigger_type"})


def cell(value: Any, is_id: bool = False) -> str:
    """A value as a table cell; control characters from the daemon shown as escapes."""
    if value is None:
        return "-"
    if is_id and isinstance(value, str):
        return unambiguous(value)
    if isinstance(value, list):
        return printable(",".join(str(v) for v in value)) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))  # ASCII only: escapes everything
    return printable(str(value))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]],
          width: int | None = None) -> str:
    """Rows as an aligned table within ``width`` columns (the terminal's, at most 80
    when unknown); the widest columns give way first, cut with an ellipsis."""
    if width is None:
        width = shutil.get_terminal_size((80, 24)).columns
    headers = [title for _, title in columns]
    ids = [key in ID_COLUMNS for key, _ in columns]
    cells = [[cell(row.get(key), is_id) for (key, _), is_id in zip(columns, ids, strict=True)]
             for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    budget = width - 2 * (len(columns) - 1)
    shrinkable = [i for i, is_id in enumerate(ids) if not is_id]
    while sum(widths) > budget and shrinkable and max(widths[i] for i in shrinkable) > 8:
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1

    def fit(text: str, size: int) -> str:
        return text if len(text) <= size else text[: size - 1] + "…"

    lines = ["  ".join(fit(h, w).ljust(w) for h, w in zip(headers, widths, strict=True))]
    for row in cells:
        lines.append("  ".join(fit(c, w).ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def render(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]],
           fmt: str) -> str:
    if fmt == "json":
        return json.dumps(list(rows), indent=2 if sys.stdout.isatty() else None)
    if fmt == "jsonl":
        return "\n".join(json.dumps(row) for row in rows)
    if not rows:
        return "(none)"
    return table(rows, columns)


def duration_text(seconds: float) -> str:
    """An uptime as people read it: ``42s``, ``3m07s``, ``5h02m``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
