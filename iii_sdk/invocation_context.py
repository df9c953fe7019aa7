"""The invocation a handler runs in, for the code inside it and the calls it makes.

While a handler runs, :func:`current` gives its function and invocation ids, who called
it and how many observe hops led to it (as the official SDK's
``iii.current_invocation()``). The calls it makes carry that on: ``caller`` (this
handler, and its own caller one level up) and ``observe_depth``, which the daemon's
loop guard for observers reads.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class InvocationContext:
    function_id: str
    invocation_id: str | None
    #: Who started it, as the daemon tells (``worker_id``, ``function_id`` ...), or None.
    caller: dict[str, Any] | None = None
    #: Observe hops that led to this invocation (0: none).
    observe_depth: int = 0
    #: ``{observer_id, activation_id}`` when an observer's activation runs it.
    activation: dict[str, Any] | None = None


_current: contextvars.ContextVar[InvocationContext | None] = contextvars.ContextVar(
    "iii_invocation", default=None)


def current() -> InvocationContext | None:
    """The invocation the calling code runs in, or None outside any handler."""
    return _current.get()


#: As the official SDK names it: ``iii_sdk.current_invocation()`` in any handler.
current_invocation = current


def run_in(context: InvocationContext, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with ``context`` current (a thread's context is restored after)."""
    token = _current.set(context)
    try:
        return fn(*args)
    finally:
        _current.reset(token)


def enter(context: InvocationContext) -> None:
    """Make ``context`` current for the rest of a task that has a context of its own."""
    _current.set(context)


def outgoing() -> tuple[dict[str, Any] | None, int | None]:
    """``caller`` and ``observe_depth`` for a call made from the current handler."""
    context = _current.get()
    if context is None:
        return None, None
    caller: dict[str, Any] = {"function_id": context.function_id}
    if context.invocation_id is not None:
        caller["invocation_id"] = context.invocation_id
    if context.caller:
        caller["parent"] = {k: v for k, v in context.caller.items() if k != "parent"}
    return caller, context.observe_depth or None
