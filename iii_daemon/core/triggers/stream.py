"""``stream``: fire when an item of a stream changes (``stream::set|update|delete``) or
an event is sent to it (``stream::send``); ``group_id`` / ``item_id`` narrow it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iii_daemon.core.triggers.base import ACTIVE, Binding, Clock, require_string

if TYPE_CHECKING:
    from iii_daemon.core.effects import Output


class StreamType:
    id: str = "stream"
    description: str = "fires when a stream's item changes or an event is sent to it"
    owner: int | None = None
    # Each change carries its own payload: many may run, but not without bound.
    max_running: int = 1000

    def __init__(self) -> None:
        self._by_stream: dict[str, dict[str, Binding]] = {}

    def validate(self, config: dict[str, Any], clock: Clock) -> str | None:
        return (require_string(config, "stream_name")
                or require_string(config, "group_id", optional=True)
                or require_string(config, "item_id", optional=True))

    def bind(self, binding: Binding, clock: Clock, out: Output) -> str:
        self._by_stream.setdefault(binding.config["stream_name"], {})[binding.id] = binding
        return ACTIVE

    def unbind(self, binding: Binding, out: Output) -> None:
        name = binding.config["stream_name"]
        bindings = self._by_stream.get(name, {})
        bindings.pop(binding.id, None)
        if not bindings:
            self._by_stream.pop(name, None)

    def matching(self, event: dict[str, Any]) -> list[tuple[Binding, Any]]:
        """``event`` is the payload itself (see :mod:`iii_daemon.functions.stream`)."""
        group, item = event["groupId"], event["id"]
        return [(b, event) for b in self._by_stream.get(event["streamName"], {}).values()
                if b.config.get("group_id") in (None, group)
                and b.config.get("item_id") in (None, item)]
