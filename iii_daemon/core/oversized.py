"""What a frame too large to read was, from its two ends (the rest was dropped unread).

Pure: the core uses it to fail just the call the frame belonged to (a result too large
fails that call, a call too large is answered as refused) instead of the connection.
A key is found only where JSON puts keys: inside a string a quote is escaped, so
``"invocation_id":"`` in the bytes is a key (perhaps of a nested object: the head is
searched first, where our SDK and the official ones put the message's own fields).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TYPE = re.compile(rb'"type"\s*:\s*"([a-z]{1,40})"')
_INVOCATION_ID = re.compile(rb'"invocation_id"\s*:\s*"([^"\\]{1,256})"')


@dataclass(frozen=True, slots=True)
class Peeked:
    type: str | None
    invocation_id: str | None


def _first(pattern: re.Pattern[bytes], head: bytes, tail: bytes) -> str | None:
    found = pattern.search(head)
    if found is None:
        matches = pattern.findall(tail)
        if not matches:
            return None
        value: bytes = matches[-1]  # at the end, the message's own field comes last
    else:
        value = found.group(1)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def peek(head: bytes, tail: bytes) -> Peeked:
    """The message type and invocation id that the frame's ends show, where they do."""
    return Peeked(_first(_TYPE, head, tail), _first(_INVOCATION_ID, head, tail))
