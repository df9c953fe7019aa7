"""What the core hands its driver: messages for connections, and commands. Kept apart
from the router so that trigger types and daemon functions can name it without
importing the router (no import circle)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iii_sdk import protocol as p


@dataclass(frozen=True, slots=True)
class Close:
    """Driver command: close this connection (after writing what came before)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Emit:
    """Driver command: an event happened (trigger fired or skipped, worker joined or
    left, registration refused, ...). The router also keeps it in its history ring; the
    driver hands it to watchers (once ``watch`` exists) and drops it otherwise."""

    event: dict[str, Any]


#: The connection id of :class:`Emit` effects: events belong to no connection.
EVENTS = 0

#: ``(connection id, message or command)`` pairs, in the order they must happen.
Output = list[tuple[int, "p.Message | Close | Emit"]]
