"""What an id may contain. Ids end up in terminals (``iii list``, logs, the TUI), so
control characters, which can rewrite a screen or a clipboard, are refused at the door
(by the daemon) and escaped on the way out (by the CLI), with the one pattern below.

Imports only ``re``: the CLI's fast path uses it."""

from __future__ import annotations

import re

#: C0 and C1 controls, DEL, line/paragraph separators and bidi overrides and isolates.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def id_problem(what: str, value: str) -> str | None:
    """Why ``value`` cannot be an id, or None."""
    if not value:
        return f"{what} must not be empty"
    match = CONTROL.search(value)
    if match is not None:
        return (f"{what} {value!r} contains the control character "
                f"U+{ord(match.group()):04X}; ids must be printable")
    return None
