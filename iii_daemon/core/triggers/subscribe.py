"""``subscribe``: fire with the published data when something is published on ``topic``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iii_daemon.core.triggers.base import ACTIVE, Binding, Clock, require_string

if TYPE_CHECKING:
    from iii_daemon.core.effects import Output


class SubscribeType:
    id: str = "subscribe"
    description: str = "fires with the data of each `publish` on a topic"
    owner: int | None = None
    # Each message carries its own payload: many may run, but not without bound.
    max_running: int = 1000

    def __init__(self) -> None:
        self._by_topic: dict[str, dict[str, Binding]] = {}

    def validate(self, config: dict[str, Any], clock: Clock) -> str | None:
        return require_string(config, "topic")

    def bind(self, binding: Binding, clock: Clock, out: Output) -> str:
        self._by_topic.setdefault(binding.config["topic"], {})[binding.id] = binding
        return ACTIVE

    def unbind(self, binding: Binding, out: Output) -> None:
        self._by_topic.get(binding.config["topic"], {}).pop(binding.id, None)

    def matching(self, event: dict[str, Any]) -> list[tuple[Binding, Any]]:
        """``event`` is ``{topic, data}``; each subscriber gets the bare data."""
        data = event.get("data")
        return [(b, data) for b in self._by_topic.get(event["topic"], {}).values()]
