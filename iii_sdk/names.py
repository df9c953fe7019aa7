"""What an id may contain. Ids end up in terminals (``iii list``, logs, the TUI), so
control characters, which can rewrite a screen or a clipboard, are refused at the door
(by the daemon) and escaped on the way out (by the CLI), with the one pattern below.
So is what lets one id pass for another: whitespace at either end, invisible format
characters (Unicode category Cf: zero-width spaces and joiners, bidi marks, the BOM,
tags), and lengths no table shows whole.

Imports only ``re``: the CLI's fast path uses it."""

from __future__ import annotations

import re

#: C0 and C1 controls, DEL, line/paragraph separators and bidi overrides and isolates.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


#: Unicode's format characters (category Cf, as of Unicode 15.1; a unit test checks it
#: against the interpreter's tables): invisible, so two ids could differ only in them.
FORMAT = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd"
    "\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f]")

#: The longest id, in characters.
MAX_ID_LENGTH = 512


def id_problem(what: str, value: str) -> str | None:
    """Why ``value`` cannot be an id, or None."""
    if not value:
        return f"{what} must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"{what} is {len(value)} characters long; ids are at most {MAX_ID_LENGTH}"
    match = CONTROL.search(value)
    if match is not None:
        return (f"{what} {_shown(value)} contains the control character "
                f"U+{ord(match.group()):04X}; ids must be printable")
    match = FORMAT.search(value)
    if match is not None:
        return (f"{what} {_shown(value)} contains the invisible format character "
                f"U+{ord(match.group()):04X}; ids must show every character they hold")
    if value != value.strip():
        return f"{what} {_shown(value)} starts or ends with whitespace"
    return None


def _shown(value: str) -> str:
    """An id quoted in a message, every character outside printable ASCII escaped."""
    return repr(value).encode("ascii", "backslashreplace").decode("ascii")
