"""What ``state::*`` and ``stream::*`` share: values kept in memory and in the store.

A change is made in memory at once and kept through the call's store write; only once
that committed is the caller answered and are triggers fired. A write that fails puts
the old value back. A read of a value whose change is still in flight is answered after
it landed, so nobody hears of a change that may not survive.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from iii_daemon.core.builtin import AfterWrites, CallContext
from iii_daemon.core.unsettled import MISSING, or_none
from iii_daemon.functions.update_ops import apply_ops, parse_ops

if TYPE_CHECKING:
    from iii_daemon.core.builtin import Services
    from iii_daemon.core.effects import Output
    from iii_daemon.core.state_table import StateTable
    from iii_daemon.core.writes import Write

S = TypeVar("S", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Space(Generic[S]):
    """Where one kind of value lives: its table, and the writes that keep it."""

    table: StateTable[S]
    put: Callable[[S, str, Any], Write]
    drop: Callable[[S, str], Write]


def read(space: Space[S], scope: S, key: str) -> Any:
    """The value at ``scope``/``key``, or None."""
    table = space.table

    def value() -> Any:
        found = table.get(scope, key)
        return or_none(found)

    return AfterWrites(value) if (scope, key) in table.unsettled else value()


def values(space: Space[S], scope: S) -> Any:
    """Every value in ``scope``, a plain list (ordered by key)."""
    table = space.table

    def listed() -> list[Any]:
        return [value for _, value in table.items(scope)]

    return AfterWrites(listed) if table.in_flight(scope) else listed()


def change(space: Space[S], ctx: CallContext, scope: S, key: str, value: Any) -> Any:
    """Set (``MISSING``: delete) a value in memory and ask the store to keep it; return
    the value it had (``MISSING``: none)."""
    table = space.table
    old = table.get(scope, key)
    table.set(scope, key, value)
    write = space.drop(scope, key) if value is MISSING else space.put(scope, key, value)
    ctx.persist(write, table.unsettled.change((scope, key), old, value))
    return old


def update(space: Space[S], ctx: CallContext, scope: S, key: str,
           ops: Any) -> tuple[Any, Any, list[dict[str, Any]]]:
    """Run update ``ops`` on the value atomically (nothing runs between the read and the
    write); ``(old (MISSING: none), new, errors)``.

    Raises:
        CallError: a malformed op (nothing written).
    """
    parsed = parse_ops(ops)
    old = space.table.get(scope, key)
    new, errors = apply_ops(old, parsed)
    change(space, ctx, scope, key, new)
    return old, new, errors


def change_result(old: Any, new: Any,
                  errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a set or an update answers: ``{old_value, new_value, errors?}``, errors only
    when an op failed."""
    result = {"old_value": or_none(old), "new_value": new}
    if errors:
        result["errors"] = errors
    return result


def fire_when_kept(services: Services, ctx: CallContext, type_id: str,
                   event: dict[str, Any]) -> None:
    """Once the call's writes are on disk, fire the ``type_id`` triggers ``event``
    matches."""

    def fire(failure: str | None, out: Output) -> None:
        if failure is None:
            services.triggers.event(type_id, event, services.clock(), out, ctx.depth)

    ctx.then.append(fire)
