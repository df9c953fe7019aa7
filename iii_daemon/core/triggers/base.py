"""What every trigger type shares: the binding record and the plug-in interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec

if TYPE_CHECKING:
    from iii_daemon.core.effects import Output

#: Binding states shown by ``engine::registered-triggers::list``.
ACTIVE = "active"      # bound: it fires
PENDING = "pending"    # its type has no provider (yet, or any more)
BINDING = "binding"    # forwarded to the provider, no answer yet (it may never answer)
ERROR = "error"        # the provider refused it, or a stored row could not be loaded
ENDED = "ended"        # its schedule has no more times (a cron with a last year)


class Clock(msgspec.Struct, frozen=True):
    """The router's time: monotonic ``now`` for deadlines, ``wall`` (UTC epoch) for cron.
    (A struct: the core makes one whenever it reads the time.)"""

    now: float
    wall: float


@dataclass(slots=True, eq=False)
class Binding:
    id: str
    trigger_type: str
    function_id: str
    config: dict[str, Any]
    metadata: Any
    #: The owning connection, or None: the daemon owns it (stored, survives restarts).
    owner: int | None
    status: str = PENDING
    error: str | None = None
    #: Firings started and not finished (condition or target still running).
    running: int = 0
    #: Its type was asked to watch for it (and must be told to stop).
    bound: bool = False
    #: Its last firing failed (logged once until it works again).
    failing: bool = False


class TriggerHost(Protocol):
    """What the trigger manager needs from the core: time, names, events, and calls it
    can make itself. (The router provides it; the manager never sees the router.)"""

    @property
    def clock(self) -> Clock: ...

    def worker_id(self, conn_id: int | None) -> str | None: ...

    def record(self, kind: str, out: Output, **fields: Any) -> None: ...

    def call_internal(self, function_id: str, data: Any, then: Any, clock: Clock,
                      out: Output, timeout_ms: int | None = None, source: str = "daemon",
                      tags: dict[str, Any] | None = None, *, depth: int = 0) -> None: ...


class TriggerType(Protocol):
    """A kind of trigger. Built-ins fire through the manager; worker-provided types are
    forwarded to their provider, which fires them with ordinary calls."""

    id: str
    description: str
    #: The connection providing it; None for the daemon's built-ins.
    owner: int | None
    #: Firings of one binding that may run at once; one more is skipped as still_running.
    max_running: int

    def validate(self, config: dict[str, Any], clock: Clock) -> str | None:
        """What is wrong with ``config``, or None (worker types leave that to the worker)."""

    def bind(self, binding: Binding, clock: Clock, out: Output) -> str:
        """Start watching for ``binding``; return its new status."""

    def unbind(self, binding: Binding, out: Output) -> None:
        """Stop watching for ``binding``."""


@runtime_checkable
class Scheduled(Protocol):
    """Optional hook of a type that fires at times of its own (cron): the daemon wakes
    at the earliest ``next_due`` of all such types and fires what ``pop_due`` returns."""

    def next_due(self) -> float | None:
        """The earliest monotonic time a binding is due, or None."""

    def pop_due(self, clock: Clock, limit: int) -> list[tuple[Binding, Any]]:
        """The bindings due at ``clock`` with their payloads (each scheduled again),
        ``limit`` at most: the rest stay due, for the next turn."""


@runtime_checkable
class Reactive(Protocol):
    """Optional hook of a type that fires on events inside the daemon (a state change,
    a publish): daemon functions report the event, the type picks the bindings."""

    def matching(self, event: dict[str, Any]) -> list[tuple[Binding, Any]]:
        """The bindings ``event`` fires, each with the payload its function gets."""


@runtime_checkable
class Exclusive(Protocol):
    """Optional hook of a type where two bindings may not claim the same thing (an http
    route): a registration that would is refused with the reason."""

    def conflict(self, binding: Binding) -> str | None:
        """Why ``binding`` cannot be bound next to the others (one with its own id, being
        replaced, never conflicts), or None."""


def require_string(config: dict[str, Any], key: str, optional: bool = False) -> str | None:
    """An error message unless ``config[key]`` is a non-empty string."""
    value = config.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        return f"config.{key} must be a non-empty string"
    return None
