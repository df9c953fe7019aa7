"""``state::get|set|delete|list|list_groups|update`` (values kept in the store, shaped as
the upstream engine shapes them) and ``publish``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iii_daemon.core import kept_values
from iii_daemon.core.builtin import BuiltinFunction, CallContext, Handler, field
from iii_daemon.core.kept_values import Space
from iii_daemon.core.unsettled import MISSING, or_none
from iii_daemon.core.writes import DropState, PutState
from iii_daemon.functions import shared_state

if TYPE_CHECKING:
    from iii_daemon.core.builtin import Services


def _space(services: Services) -> Space[str]:
    return Space(services.state, PutState, DropState)


def _where(ctx: CallContext) -> tuple[str, str]:
    return field(ctx.data, "scope", str), field(ctx.data, "key", str)


def _fire(services: Services, ctx: CallContext, scope: str, key: str, old: Any,
          new: Any) -> None:
    """The ``state`` triggers' event of a change (``MISSING``: no value)."""
    event_type = ("state:deleted" if new is MISSING else
                  "state:created" if old is MISSING else "state:updated")
    kept_values.fire_when_kept(services, ctx, "state", {
        "type": "state", "event_type": event_type, "scope": scope, "key": key,
        "old_value": or_none(old),
        "new_value": or_none(new)})


def state_get(services: Services, ctx: CallContext) -> Any:
    return kept_values.read(_space(services), *_where(ctx))


def state_set(services: Services, ctx: CallContext) -> Any:
    scope, key = _where(ctx)
    value = ctx.data.get("value")
    old = kept_values.change(_space(services), ctx, scope, key, value)
    _fire(services, ctx, scope, key, old, value)
    return kept_values.change_result(old, value)


def state_delete(services: Services, ctx: CallContext) -> Any:
    scope, key = _where(ctx)
    if services.state.get(scope, key) is MISSING:
        return {"old_value": None}
    old = kept_values.change(_space(services), ctx, scope, key, MISSING)
    _fire(services, ctx, scope, key, old, MISSING)
    return {"old_value": old}


def state_update(services: Services, ctx: CallContext) -> Any:
    scope, key = _where(ctx)
    old, new, errors = kept_values.update(_space(services), ctx, scope, key,
                                          ctx.data.get("ops"))
    _fire(services, ctx, scope, key, old, new)
    return kept_values.change_result(old, new, errors)


def state_list(services: Services, ctx: CallContext) -> Any:
    return kept_values.values(_space(services), field(ctx.data, "scope", str))


def state_list_groups(services: Services, ctx: CallContext) -> Any:
    return {"groups": services.state.scopes()}


def publish(services: Services, ctx: CallContext) -> Any:
    topic = field(ctx.data, "topic", str)
    count = services.triggers.event("subscribe", {"topic": topic, "data": ctx.data.get("data")},
                                    ctx.clock, ctx.out, ctx.depth)
    return {"subscribers": count}


def _shared_or_local(local: Handler, shared: Handler) -> Handler:
    """``local`` on the embedded store; ``shared`` when state lives in the backend the
    daemon shares (``publish``: when it shares one)."""

    def handler(services: Services, ctx: CallContext) -> Any:
        backend = services.shared if local is publish else services.shared_state
        return (local if backend is None else shared)(services, ctx)

    return handler


FUNCTIONS = (
    BuiltinFunction("state::get", "the value at {scope, key}, or null",
                    _shared_or_local(state_get, shared_state.state_get)),
    BuiltinFunction("state::set", "sets {scope, key} to value -> {old_value, new_value}; "
                    "fires state triggers", _shared_or_local(state_set, shared_state.state_set)),
    BuiltinFunction("state::delete", "removes {scope, key} -> {old_value}; fires state "
                    "triggers", _shared_or_local(state_delete, shared_state.state_delete)),
    BuiltinFunction("state::update", "applies ops to {scope, key} atomically -> "
                    "{old_value, new_value, errors?}; fires state triggers",
                    _shared_or_local(state_update, shared_state.state_update)),
    BuiltinFunction("state::list", "every value in {scope}, a list",
                    _shared_or_local(state_list, shared_state.state_list)),
    BuiltinFunction("state::list_groups", "the scopes that hold keys -> {groups}",
                    _shared_or_local(state_list_groups, shared_state.state_list_groups)),
    BuiltinFunction("publish", "sends {topic, data} to every subscribe trigger on topic",
                    _shared_or_local(publish, shared_state.publish)),
)
