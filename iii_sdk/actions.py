"""TriggerActions: how a call is routed (protocol.md § Calls)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TriggerActionVoid:
    """Fire and forget: the caller gets ``None`` at once, never the function's result."""

    type: str = "void"


@dataclass(frozen=True, slots=True)
class TriggerActionEnqueue:
    """Through the named durable queue, with retries; answered with a receipt."""

    queue: str
    type: str = "enqueue"


class TriggerAction:
    """As in the official SDK: ``TriggerAction.Void()``, ``TriggerAction.Enqueue(queue=...)``."""

    @staticmethod
    def Void() -> TriggerActionVoid:
        return TriggerActionVoid()

    @staticmethod
    def Enqueue(*, queue: str) -> TriggerActionEnqueue:
        return TriggerActionEnqueue(queue=queue)


def action_to_wire(action: Any) -> dict[str, Any] | None:
    """An action as the ``action`` field of ``invokefunction``.

    Accepts the classes above, or a dict ``{"type": ..., ...params}`` (worker-provided
    actions such as ``{"type": "delay", "ms": 5000}``).

    Raises:
        TypeError, ValueError: not an action.
    """
    if action is None:
        return None
    if isinstance(action, TriggerActionVoid):
        return {"type": "void"}
    if isinstance(action, TriggerActionEnqueue):
        if not action.queue:
            raise ValueError("Enqueue needs a queue name")
        return {"type": "enqueue", "queue": action.queue}
    if isinstance(action, dict):
        if not isinstance(action.get("type"), str) or not action["type"]:
            raise ValueError("an action dict needs a non-empty string 'type'")
        return dict(action)
    raise TypeError(f"not a TriggerAction: {action!r}")
