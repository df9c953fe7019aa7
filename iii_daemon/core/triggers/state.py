"""``state``: fire when a state value changes: in ``scope`` (and ``key``) if given, else
anywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iii_daemon.core.triggers.base import ACTIVE, Binding, Clock, require_string

if TYPE_CHECKING:
    from iii_daemon.core.effects import Output


class StateType:
    id: str = "state"
    description: str = "fires when a state value changes (in a scope, or one key, if given)"
    owner: int | None = None
    # Each change carries its own payload: many may run, but not without bound.
    max_running: int = 1000

    def __init__(self) -> None:
        #: Bindings by the scope they watch; None: every scope.
        self._by_scope: dict[str | None, dict[str, Binding]] = {}

    def validate(self, config: dict[str, Any], clock: Clock) -> str | None:
        return (require_string(config, "scope", optional=True)
                or require_string(config, "key", optional=True))

    def bind(self, binding: Binding, clock: Clock, out: Output) -> str:
        self._by_scope.setdefault(binding.config.get("scope"), {})[binding.id] = binding
        return ACTIVE

    def unbind(self, binding: Binding, out: Output) -> None:
        scope = binding.config.get("scope")
        bindings = self._by_scope.get(scope, {})
        bindings.pop(binding.id, None)
        if not bindings:
            self._by_scope.pop(scope, None)

    def matching(self, event: dict[str, Any]) -> list[tuple[Binding, Any]]:
        """``event`` is the payload itself: ``{type, event_type, scope, key, ...}``."""
        key = event["key"]
        return [(b, event) for scope in (event["scope"], None)
                for b in self._by_scope.get(scope, {}).values()
                if b.config.get("key") in (None, key)]
