"""``state::get|set|delete|list`` (values kept in the store) and ``publish``.

Values live in memory (:class:`StateTable`); a change is made there at once and kept
through the call's store write, and only once that committed is the caller answered
and are the ``state`` triggers fired. A write that fails puts the old value back. A
read of a key whose change is still in flight is answered after it landed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iii_daemon.builtin import AfterWrites, BuiltinFunction, CallContext, field
from iii_daemon.unsettled import MISSING
from iii_daemon.writes import DropState, PutState

if TYPE_CHECKING:
    from iii_daemon.builtin import Services
    from iii_daemon.effects import Output


def state_get(services: Services, ctx: CallContext) -> Any:
    state = services.state
    scope, key = field(ctx.data, "scope", str), field(ctx.data, "key", str)

    def read() -> Any:
        value = state.get(scope, key)
        return None if value is MISSING else value

    return AfterWrites(read) if (scope, key) in state.unsettled else read()


def state_set(services: Services, ctx: CallContext) -> Any:
    scope, key = field(ctx.data, "scope", str), field(ctx.data, "key", str)
    value = ctx.data.get("value")
    old = _change(services, ctx, scope, key, value)
    event = "state:created" if old is MISSING else "state:updated"
    old_value = None if old is MISSING else old
    _fire_when_kept(services, ctx, scope, key, event, old_value, value)
    return {"old_value": old_value, "new_value": value}


def state_delete(services: Services, ctx: CallContext) -> Any:
    scope, key = field(ctx.data, "scope", str), field(ctx.data, "key", str)
    if services.state.get(scope, key) is MISSING:
        return {"removed": False, "old_value": None}
    old = _change(services, ctx, scope, key, MISSING)
    _fire_when_kept(services, ctx, scope, key, "state:deleted", old, None)
    return {"removed": True, "old_value": old}


def _change(services: Services, ctx: CallContext, scope: str, key: str, value: Any) -> Any:
    """Set (``MISSING``: delete) a value in memory and ask the store to keep it;
    return the value it had."""
    state = services.state
    old = state.get(scope, key)
    state.set(scope, key, value)
    write = DropState(scope, key) if value is MISSING else PutState(scope, key, value)
    ctx.persist(write, state.unsettled.change((scope, key), old, value))
    return old


def _fire_when_kept(services: Services, ctx: CallContext, scope: str, key: str,
                    event_type: str, old: Any, new: Any) -> None:
    """Once the change is on disk, fire the ``state`` triggers watching scope / key."""
    event = {"type": "state", "event_type": event_type, "scope": scope, "key": key,
             "old_value": old, "new_value": new}

    def fire(failure: str | None, out: Output) -> None:
        if failure is None:
            services.triggers.event("state", event, services.clock(), out)

    ctx.then.append(fire)


def state_list(services: Services, ctx: CallContext) -> Any:
    state = services.state
    scope = field(ctx.data, "scope", str)

    def read() -> Any:
        return {"items": [{"key": k, "value": v} for k, v in state.items(scope)]}

    in_flight = any(unsettled[0] == scope for unsettled in state.unsettled)
    return AfterWrites(read) if in_flight else read()


def publish(services: Services, ctx: CallContext) -> Any:
    topic = field(ctx.data, "topic", str)
    count = services.triggers.event("subscribe", {"topic": topic, "data": ctx.data.get("data")},
                                  ctx.clock, ctx.out)
    return {"subscribers": count}


FUNCTIONS = (
    BuiltinFunction("state::get", "the value at {scope, key}, or null", state_get),
    BuiltinFunction("state::set", "sets {scope, key} to value; fires state triggers",
                    state_set),
    BuiltinFunction("state::delete", "removes {scope, key}; fires state triggers",
                    state_delete),
    BuiltinFunction("state::list", "every {key, value} in a scope", state_list),
    BuiltinFunction("publish", "sends {topic, data} to every subscribe trigger on topic",
                    publish),
)
