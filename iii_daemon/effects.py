"""What the core hands its driver: messages for connections, and commands. Kept apart
from the router so that trigger types and daemon functions can name it without
importing the router (no import circle)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iii_sdk import protocol as p


@dataclass(frozen=True, slots=True)
class Close:
    """Driver command: close this connection (after writing what came before)."""

    reason: str


#: ``(connection id, message or command)`` pairs, in the order they must happen.
Output = list[tuple[int, "p.Message | Close"]]
