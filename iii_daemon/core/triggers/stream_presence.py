"""``stream:join`` and ``stream:leave``: fire when a stream-socket client joins or
leaves a stream (leaving includes disconnecting), with ``{subscription_id,
stream_name, group_id, id, context}``. A join function may answer ``{unauthorized:
true}``: the client is then refused that subscription (core/stream_joining.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iii_daemon.core.triggers.base import ACTIVE, Binding, Clock

if TYPE_CHECKING:
    from iii_daemon.core.effects import Output


class _Presence:
    id: str
    description: str
    owner: int | None = None
    #: A join waits for its functions; so many joins may wait at once (bounded by the
    #: clients and their subscriptions anyway). Past it a join is refused, not let by.
    max_running: int = 100_000

    def __init__(self) -> None:
        self.bound: dict[str, Binding] = {}

    def validate(self, config: dict[str, Any], clock: Clock) -> str | None:
        return None  # no settings but the manager's own (condition_function_id)

    def bind(self, binding: Binding, clock: Clock, out: Output) -> str:
        self.bound[binding.id] = binding
        return ACTIVE

    def unbind(self, binding: Binding, out: Output) -> None:
        self.bound.pop(binding.id, None)

    def matching(self, event: dict[str, Any]) -> list[tuple[Binding, Any]]:
        return [(binding, event) for binding in self.bound.values()]


class StreamJoinType(_Presence):
    id = "stream:join"
    description = ("fires when a stream-socket client joins a stream; answering "
                   "{unauthorized: true} refuses the join")


class StreamLeaveType(_Presence):
    id = "stream:leave"
    description = "fires when a stream-socket client leaves a stream or disconnects"
