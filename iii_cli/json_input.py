"""JSON the user typed (``--json``, ``k=v``, ``@file``, stdin): read strictly, and every
problem told as one line about what was typed, before anything is sent.

Python's ``json`` takes things the wire does not (``NaN``, ``Infinity``, ``1e999`` as
infinity, lone surrogates that UTF-8 cannot carry) and raises ``RecursionError`` on deep
nesting; each of those would otherwise surface later as a traceback or as the daemon's
complaint about a byte offset in a frame the user never saw.

Imports only ``json``, ``math`` and ``re``: the ``iii trigger`` fast path uses it.
"""

from __future__ import annotations

import json
import json.scanner
import math
import re
from typing import Any

#: Arrays and objects inside one payload. The daemon's frame decoder stops a little
#: below 1 000 (the interpreter's recursion limit); the frame itself adds a level.
MAX_NESTING = 900


class UsageError(Exception):
    """What the user typed cannot be sent; the message is one line saying why."""


class _NotANumber(Exception):
    """``NaN``, ``Infinity`` or a number too large for a float: not a JSON value here."""


def _constant(name: str) -> Any:
    raise _NotANumber(f"{name} is not a JSON number (JSON numbers are finite)")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotANumber(f"{text} is too large for a JSON number (it would be infinite)")
    return value


def _strict(text: str | bytes) -> Any:
    """``json.loads`` without NaN, Infinity or infinite floats.

    Raises:
        ValueError: not JSON. _NotANumber: one of those numbers. RecursionError.
    """
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float)
    except _NotANumber:
        json.loads(text)  # is it JSON at all ("NaNa" is not)? ValueError if not
        raise


def loads(text: str | bytes, what: str) -> Any:
    """Parse JSON that must be JSON (``--json``, a file, stdin, ``--action``).

    Raises:
        UsageError: invalid JSON, a non-finite number, too deep, not valid Unicode.
    """
    try:
        value = _strict(text)
    except _NotANumber as exc:
        raise UsageError(f"{what}: {exc}") from None
    except RecursionError:
        raise UsageError(f"{what} is nested more than {MAX_NESTING} levels deep") from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise UsageError(f"{what} is not valid JSON: {exc}") from None
    source = text if isinstance(text, str) \
        else text.decode(json.detect_encoding(text), "surrogatepass")
    encodes = _encodes(source)
    if _may_break_rules(source, encodes):
        # Walks the value: slow for a large one, so only when needed. A surrogate that
        # was not in the text came from a \u escape, never from a byte of an argument.
        check(value, what, escapes_only=encodes)
    return value


#: The C scanner behind ``json.loads``, called directly: a small line costs ~0.3 µs
#: instead of ~1.3 µs, which is most of the work of a ``--batch`` line.
_scan = json.scanner.make_scanner(
    json.JSONDecoder(parse_constant=_constant, parse_float=_float))
#: What JSON calls whitespace (``str.strip()`` would take more, such as U+00A0).
_JSON_SPACE = " \t\n\r"


def loads_line(raw: bytes, number: int) -> tuple[Any, str]:
    """Line ``number`` of ``--batch`` input: its value, and its JSON text, fit to send
    as it is.

    The same rules as :func:`loads`, taken at C speed for a line that plainly keeps
    them (UTF-8, one value, no ``\\u`` escape of a surrogate, few brackets); any other
    line goes through :func:`loads` itself, which finds what is wrong.

    Raises:
        UsageError: as :func:`loads`.
    """
    try:
        text = raw.decode("utf-8").strip(_JSON_SPACE)
        value, end = _scan(text, 0)
        escaped = "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None
        # A text shorter than the nesting limit cannot nest past it.
        deep = len(text) > MAX_NESTING and _may_break_rules(text, True)
        plain = end == len(text) and not escaped and not deep
    except (UnicodeDecodeError, StopIteration, ValueError, _NotANumber, RecursionError):
        plain = False
    if not plain:
        value = loads(raw, f"line {number}")
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value, text


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def _may_break_rules(text: str, encodes: bool) -> bool:
    """Whether the value parsed from ``text`` (valid JSON; ``encodes``: as UTF-8) may
    hold a lone surrogate or nest deeper than MAX_NESTING, found in the text at C speed;
    the exact check walks the value, which costs seconds for tens of megabytes."""
    if not encodes or _SURROGATE_ESCAPE.search(text):
        return True
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(MAX_NESTING):  # each pass takes one level off
        brackets = _INNERMOST.sub("", brackets)
        if not brackets:
            return False
    return True


def loads_or_text(text: str, key: str) -> Any:
    """The value of a ``key=text`` pair: JSON when it is JSON, else the text itself
    (``name=bob``).

    Raises:
        UsageError: ``NaN``/``Infinity``/``1e999`` (a number the user meant, which JSON
            cannot carry: quote it for the string), too deep, not valid Unicode.
    """
    what = f"the value of {key}"
    try:
        value = _strict(text)
    except _NotANumber as exc:
        raise UsageError(f"{what}: {exc}; quote it for the string ({key}='\"{text}\"')"
                         ) from None
    except RecursionError:
        raise UsageError(f"{what} is nested more than {MAX_NESTING} levels deep") from None
    except ValueError:
        value = text
    check(value, what)
    return value


def check(value: Any, what: str, escapes_only: bool = False) -> None:
    """Refuse what cannot travel as UTF-8 JSON within the nesting limit (iterative: a
    deep value must not exhaust the stack here either). ``escapes_only``: the value was
    parsed from valid text, so a surrogate in it came from a ``\\u`` escape.

    Raises:
        UsageError: a lone surrogate (or an argument that was not UTF-8), too deep.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, what, escapes_only)
        elif isinstance(item, dict | list):
            if depth >= MAX_NESTING:
                raise UsageError(f"{what} is nested more than {MAX_NESTING} levels deep")
            if isinstance(item, dict):
                for key, inner in item.items():
                    _check_text(key, what, escapes_only)
                    stack.append((inner, depth + 1))
            else:
                stack.extend((inner, depth + 1) for inner in item)


def _check_text(text: str, what: str, escapes_only: bool = False) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(text[exc.start])
        # How Python keeps a byte of an argument that is not UTF-8.
        if 0xDC80 <= bad <= 0xDCFF and not escapes_only:
            raise UsageError(f"{what} is not valid UTF-8 (byte 0x{bad - 0xDC00:02x})") \
                from None
        raise UsageError(f"{what} holds \\u{bad:04x}, a lone surrogate that is not "
                         f"valid Unicode") from None
