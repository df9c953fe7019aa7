"""``state``: fire when a value under ``scope`` (and ``key``, if given) changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iii_daemon.triggers.base import ACTIVE, Binding, Clock, require_string

if TYPE_CHECKING:
    from iii_daemon.effects import Output


class StateType:
    id: str = "state"
    description: str = "fires when a state value in a scope (or one key) changes"
    owner: int | None = None
    # Each change carries its own payload: many may run, but not without bound.
    max_running: int = 1000

    def __init__(self) -> None:
        self._by_scope: dict[str, dict[str, Binding]] = {}

    def validate(self, config: dict[str, Any], clock: Clock) -> str | None:
        return require_string(config, "scope") or require_string(config, "key", optional=True)

    def bind(self, binding: Binding, clock: Clock, out: Output) -> str:
        self._by_scope.setdefault(binding.config["scope"], {})[binding.id] = binding
        return ACTIVE

    def unbind(self, binding: Binding, out: Output) -> None:
        scope = self._by_scope.get(binding.config["scope"], {})
        scope.pop(binding.id, None)

    def matching(self, event: dict[str, Any]) -> list[tuple[Binding, Any]]:
        """``event`` is the payload itself: ``{type, event_type, scope, key, ...}``."""
        return [(b, event) for b in self._by_scope.get(event["scope"], {}).values()
                if b.config.get("key") in (None, event["key"])]
