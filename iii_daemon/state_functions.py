"""``state::get|set|delete|list`` (values kept in the store) and ``publish``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iii_daemon.builtin import BuiltinFunction, CallContext, field
from iii_daemon.store import MISSING

if TYPE_CHECKING:
    from iii_daemon.builtin import Services


def state_get(services: Services, ctx: CallContext) -> Any:
    value = services.store.get_state(field(ctx.data, "scope", str), field(ctx.data, "key", str))
    return None if value is MISSING else value


def state_set(services: Services, ctx: CallContext) -> Any:
    scope, key = field(ctx.data, "scope", str), field(ctx.data, "key", str)
    value = ctx.data.get("value")
    old = services.store.get_state(scope, key)
    services.store.set_state(scope, key, value)
    event = "state:created" if old is MISSING else "state:updated"
    old_value = None if old is MISSING else old
    _changed(services, ctx, scope, key, event, old_value, value)
    return {"old_value": old_value, "new_value": value}


def state_delete(services: Services, ctx: CallContext) -> Any:
    scope, key = field(ctx.data, "scope", str), field(ctx.data, "key", str)
    old = services.store.get_state(scope, key)
    if old is MISSING:
        return {"removed": False, "old_value": None}
    services.store.delete_state(scope, key)
    _changed(services, ctx, scope, key, "state:deleted", old, None)
    return {"removed": True, "old_value": old}


def _changed(services: Services, ctx: CallContext, scope: str, key: str, event_type: str,
             old: Any, new: Any) -> None:
    """Fire the ``state`` triggers watching ``scope`` / ``key``."""
    services.triggers.event("state", {"type": "state", "event_type": event_type, "scope": scope,
                                    "key": key, "old_value": old, "new_value": new},
                          ctx.clock, ctx.out)


def state_list(services: Services, ctx: CallContext) -> Any:
    scope = field(ctx.data, "scope", str)
    return {"items": [{"key": k, "value": v} for k, v in services.store.list_state(scope)]}


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
