"""Trigger types a worker provides: bindings are forwarded to it, and it fires them by
calling the function with ordinary ``invokefunction``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iii_daemon.core.triggers.base import BINDING, Binding, Clock
from iii_sdk import protocol as p

if TYPE_CHECKING:
    from iii_daemon.core.effects import Output


class ProvidedType:
    def __init__(self, message: p.RegisterTriggerType, owner: int) -> None:
        self.id = message.id
        self.description = message.description
        self.owner: int | None = owner
        self.max_running = 0  # the provider fires with ordinary calls; none are tracked
        self.trigger_request_format = message.trigger_request_format
        self.call_request_format = message.call_request_format

    def validate(self, config: dict[str, Any], clock: Clock) -> str | None:
        return None  # the provider answers with its own verdict

    def bind(self, binding: Binding, clock: Clock, out: Output) -> str:
        assert self.owner is not None
        out.append((self.owner, p.RegisterTrigger(
            id=binding.id, trigger_type=binding.trigger_type, function_id=binding.function_id,
            config=binding.config, metadata=binding.metadata)))
        return BINDING  # until the provider answers; it may never (the official SDK may not)

    def unbind(self, binding: Binding, out: Output) -> None:
        assert self.owner is not None
        # The official SDK ignores an unregistertrigger without trigger_type.
        out.append((self.owner, p.UnregisterTrigger(
            id=binding.id, trigger_type=binding.trigger_type, function_id=binding.function_id,
            config=binding.config, metadata=binding.metadata)))
