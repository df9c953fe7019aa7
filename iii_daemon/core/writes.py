"""What the core asks the store to keep, and what the store hands back at start-up.

Plain records, no I/O: the core describes a change as writes inside a ``Persist``
effect (iii_daemon.core.effects); the driver's store writer commits them off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class PutTrigger:
    """Store (or replace) a daemon-owned trigger."""

    id: str
    trigger_type: str
    function_id: str
    config: dict[str, Any]
    metadata: Any


@dataclass(frozen=True, slots=True)
class DropTrigger:
    id: str


@dataclass(frozen=True, slots=True)
class PutState:
    scope: str
    key: str
    value: Any


@dataclass(frozen=True, slots=True)
class DropState:
    scope: str
    key: str


@dataclass(frozen=True, slots=True)
class PutStreamItem:
    stream_name: str
    group_id: str
    item_id: str
    value: Any


@dataclass(frozen=True, slots=True)
class DropStreamItem:
    stream_name: str
    group_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class PutMessage:
    """Store (or update: a retry, a dead letter, a redrive) a queued message."""

    id: str
    queue: str
    function_id: str
    data: bytes
    attempts: int
    #: Wall-clock time (epoch seconds) it may be delivered.
    available_at: float
    enqueued_at: float
    group: str | None
    last_error: Any
    dead: bool
    #: The ``queue`` trigger it was published for (topic messages), else None.
    trigger_id: str | None


@dataclass(frozen=True, slots=True)
class DropMessage:
    """A message was acknowledged (delivered) or purged."""

    id: str


Write = (PutTrigger | DropTrigger | PutState | DropState | PutStreamItem | DropStreamItem
         | PutMessage | DropMessage)
#: Writes that must survive power loss, not only a killed daemon: a receipt is a promise.
DURABLE = (PutMessage,)

@dataclass(slots=True)
class StoredTrigger:
    id: str
    trigger_type: str
    function_id: str
    config: Any
    metadata: Any
    #: Why the row cannot be used as it is, or None.
    problem: str | None = None


@dataclass(slots=True)
class Stored:
    """Everything the store held at start-up, read before the core starts."""

    triggers: list[StoredTrigger] = field(default_factory=list)
    #: ``(scope, key, value)`` rows, each value as its JSON text.
    state: list[tuple[str, str, str | bytes]] = field(default_factory=list)
    #: ``((stream_name, group_id), item_id, value)`` rows, each value as its JSON text.
    streams: list[tuple[tuple[str, str], str, str | bytes]] = field(default_factory=list)
    #: Queued messages, dead letters included, in the order they were enqueued.
    messages: list[PutMessage] = field(default_factory=list)
