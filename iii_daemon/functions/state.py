"""``state::get|set|delete|list|list_groups|update`` (values kept in the store, shaped as
the upstream engine shapes them) and ``publish``."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from iii_daemon.core import kept_values
from iii_daemon.core.builtin import Answer, BuiltinFunction, CallContext, Later, field
from iii_daemon.core.kept_values import Space
from iii_daemon.core.unsettled import MISSING, or_none
from iii_daemon.core.writes import DropState, PutState
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode

if TYPE_CHECKING:
    from iii_daemon.core.builtin import Services
    from iii_daemon.core.effects import Output


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
    data = ctx.data.get("data")
    shared = services.shared
    if shared is None:
        count = services.triggers.event("subscribe", {"topic": topic, "data": data},
                                        ctx.clock, ctx.out)
        return {"subscribers": count}
    # Through the shared backend: every daemon (this one too) fires its subscribers when
    # the message comes back to it; the answer says how many daemons listen.
    subscribers = len(services.triggers.types["subscribe"].matching(  # type: ignore[attr-defined]
        {"topic": topic, "data": data}))
    message_id = uuid.uuid4().hex

    def start(answer: Answer, out: Output) -> None:
        def published(daemons: Any, error: str | None, out: Output) -> None:
            if error is not None:
                answer(None, p.ErrorBody(code=ErrorCode.BACKEND_UNAVAILABLE,
                                         message=f"{shared.describe}: {error}"), out)
            else:
                answer({"subscribers": subscribers, "daemons": daemons}, None, out)

        shared.request("publish", {"id": message_id, "topic": topic, "data": data},
                       published, out)

    return Later(start)


FUNCTIONS = (
    BuiltinFunction("state::get", "the value at {scope, key}, or null", state_get),
    BuiltinFunction("state::set", "sets {scope, key} to value -> {old_value, new_value}; "
                    "fires state triggers", state_set),
    BuiltinFunction("state::delete", "removes {scope, key} -> {old_value}; fires state "
                    "triggers", state_delete),
    BuiltinFunction("state::update", "applies ops to {scope, key} atomically -> "
                    "{old_value, new_value, errors?}; fires state triggers", state_update),
    BuiltinFunction("state::list", "every value in {scope}, a list", state_list),
    BuiltinFunction("state::list_groups", "the scopes that hold keys -> {groups}",
                    state_list_groups),
    BuiltinFunction("publish", "sends {topic, data} to every subscribe trigger on topic",
                    publish),
)
