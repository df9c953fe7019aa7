"""Rendering results: tables on a terminal, JSON or JSON lines for scripts."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from iii_cli.style import printable


def default_format(stream: TextIO = sys.stdout) -> str:
    return "table" if stream.isatty() else "json"


def _cell(value: Any) -> str:
    """A value as a table cell; control characters from the daemon shown as escapes."""
    if value is None:
        return "-"
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
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    budget = width - 2 * (len(columns) - 1)
    while sum(widths) > budget and max(widths) > 8:
        widest = widths.index(max(widths))
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
