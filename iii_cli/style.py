"""What reaches a terminal: colour only where wanted (cli.md: NO_COLOR and non-TTY mean
none), and never a control character that came from the daemon.

Imports nothing heavy (``os``, ``re``, iii_sdk.names): the trigger fast path uses it too.
"""

from __future__ import annotations

import os
import re
from typing import TextIO

from iii_sdk.names import CONTROL

#: CONTROL (what can move the cursor, clear the screen, set the clipboard or reorder
#: text; the characters the daemon refuses in ids) minus C0, which JSON text already
#: escapes: for escaping inside JSON strings.
_JSON_UNSAFE = re.compile("(?![\x00-\x1f])" + CONTROL.pattern)


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``)."""
    return CONTROL.sub(_visible, text)


#: Everything but printable ASCII, and the backslash that starts an escape.
_AMBIGUOUS = re.compile(r"[^\x20-\x5b\x5d-\x7e]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code == 0x5C:
        return "\\\\"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def unambiguous(text: str) -> str:
    """An id as a table shows it: two different ids never look the same, so every
    character that could pass for another (anything outside printable ASCII: a
    Cyrillic a, U+0430; a no-break space) is shown as its escape, and so is the
    backslash."""
    return _AMBIGUOUS.sub(_escaped, text)


def json_printable(text: str) -> str:
    """JSON text (C0 already escaped by the encoder) with the remaining control
    characters as ``\\uXXXX``: the same JSON value, safe on a terminal."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR")


def error_prefix(stream: TextIO) -> str:
    """``iii: `` in red where colour is wanted."""
    return "\x1b[31miii:\x1b[0m " if use_color(stream) else "iii: "
