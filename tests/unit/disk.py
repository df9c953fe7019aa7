"""The store, as the core's unit tests see it: a dict that takes Persist effects.

The real store writer (a thread over SQLite) is tested against a real daemon; here the
core's side of the contract is what matters: what it asks to keep, and what it does when
a write lands or fails. Writes can be held back to test what happens meanwhile.
"""

from __future__ import annotations

from typing import Any

import msgspec

from iii_daemon.core.effects import Persist
from iii_daemon.core.writes import (
    DropMessage,
    DropState,
    DropStreamItem,
    DropTrigger,
    PutMessage,
    PutState,
    PutStreamItem,
    PutTrigger,
    Stored,
    StoredTrigger,
)


class Disk:
    def __init__(self) -> None:
        self.triggers: dict[str, PutTrigger] = {}
        self.state: dict[tuple[str, str], Any] = {}
        self.streams: dict[tuple[str, str, str], Any] = {}
        #: Queued messages by id, in the order they were first written.
        self.messages: dict[str, PutMessage] = {}
        #: Why every write fails from now on (a full disk), or None.
        self.failing: str | None = None
        #: Hold writes instead of committing them (until ``land``).
        self.holding = False
        self.held: list[Persist] = []
        self.commits = 0

    def take(self, persist: Persist) -> bool:
        """A Persist from the core: commit it now (True) or hold it (False)."""
        if self.holding:
            self.held.append(persist)
            return False
        self.commit(persist)
        return True

    def commit(self, persist: Persist) -> None:
        self.commits += 1
        if self.failing is not None:
            persist.failure = self.failing
        else:
            for write in persist.writes:
                if isinstance(write, PutTrigger):
                    self.triggers[write.id] = write
                elif isinstance(write, DropTrigger):
                    self.triggers.pop(write.id, None)
                elif isinstance(write, PutState):
                    self.state[(write.scope, write.key)] = write.value
                elif isinstance(write, DropState):
                    self.state.pop((write.scope, write.key), None)
                elif isinstance(write, PutStreamItem):
                    self.streams[(write.stream_name, write.group_id, write.item_id)] = \
                        write.value
                elif isinstance(write, DropStreamItem):
                    self.streams.pop((write.stream_name, write.group_id, write.item_id), None)
                elif isinstance(write, PutMessage):
                    self.messages[write.id] = write
                elif isinstance(write, DropMessage):
                    self.messages.pop(write.id, None)
        persist.done = True

    def stored(self) -> Stored:
        """What a restarted daemon would read back."""
        return Stored(
            triggers=[StoredTrigger(t.id, t.trigger_type, t.function_id, t.config,
                                    t.metadata) for t in sorted(self.triggers.values(),
                                                                key=lambda t: t.id)],
            state=[(scope, key, msgspec.json.encode(value))
                   for (scope, key), value in self.state.items()],
            streams=[((name, group), item, msgspec.json.encode(value))
                     for (name, group, item), value in self.streams.items()],
            messages=list(self.messages.values()))
