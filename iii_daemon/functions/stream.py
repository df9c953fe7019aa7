"""``stream::get|set|delete|list|list_groups|update|send``, as the upstream engine shapes
them: state with ``(stream_name, group_id)`` as the scope and ``item_id`` as the key,
kept in the same store, firing ``stream`` triggers.

A worker may serve a stream itself (what the official SDK's ``create_stream`` does): it
registers ``stream::get(NAME)``, ``stream::set(NAME)``, ... and calls of that op for
``stream_name == NAME`` go to it; the built-in store serves the rest. ``stream::update``
on such a stream goes to ``stream::update(NAME)`` when served, else the daemon reads the
item with ``stream::get(NAME)``, runs the ops and writes it with ``stream::set(NAME)``,
one update of an item at a time (the upstream engine would update its own store there,
behind the backend's back).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iii_daemon.core import kept_values
from iii_daemon.core.builtin import BuiltinFunction, CallContext, Later, field, in_turn, next_turn
from iii_daemon.core.errors import CallError
from iii_daemon.core.kept_values import Space
from iii_daemon.core.unsettled import MISSING, or_none
from iii_daemon.core.writes import DropStreamItem, PutStreamItem
from iii_daemon.functions import shared_state
from iii_daemon.functions.update_ops import apply_ops, parse_ops
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode

if TYPE_CHECKING:
    from iii_daemon.core.builtin import Answer, Services
    from iii_daemon.core.effects import Output

Scope = tuple[str, str]


def _space(services: Services) -> Space[Scope]:
    return Space(services.streams,
                 lambda scope, item, value: PutStreamItem(*scope, item, value),
                 lambda scope, item: DropStreamItem(*scope, item))


def _name(ctx: CallContext) -> str:
    name: str = field(ctx.data, "stream_name", str)
    return name


def _scope(ctx: CallContext) -> Scope:
    return _name(ctx), field(ctx.data, "group_id", str)


def _item(ctx: CallContext) -> tuple[Scope, str]:
    return _scope(ctx), field(ctx.data, "item_id", str)


def _backend(services: Services, op: str, name: str) -> str | None:
    """The worker function serving ``op`` for stream ``name``, if one does."""
    function_id = f"stream::{op}({name})"
    return function_id if function_id in services.registry.functions else None


def event(wall: float, scope: Scope, item: str | None, kind: str, data: Any,
          old: Any = None, new: Any = None) -> dict[str, Any]:
    """A ``stream`` trigger's payload: the upstream engine's shape (``streamName``,
    ``groupId``, ``id``, ``event: {type, data}``) and, for code that reads state events,
    the same facts as ``event_type``, ``stream_name``, ``group_id``, ``item_id``,
    ``old_value``, ``new_value``."""
    name, group = scope
    return {"type": "stream", "timestamp": int(wall * 1000), "streamName": name,
            "groupId": group, "id": item, "event": {"type": kind, "data": data},
            "event_type": kind, "stream_name": name, "group_id": group, "item_id": item,
            "old_value": old, "new_value": new}


def change_event(wall: float, scope: Scope, item: str, old: Any, new: Any) -> dict[str, Any]:
    """The event of a change (``MISSING``: no value)."""
    old_value = or_none(old)
    if new is MISSING:
        return event(wall, scope, item, "delete", old_value, old_value, None)
    kind = "create" if old is MISSING else "update"
    return event(wall, scope, item, kind, new, old_value, new)


def _fire_now(services: Services, payload: dict[str, Any], out: Output,
              depth: int = 0) -> None:
    services.triggers.event("stream", payload, services.clock(), out, depth)


def _forward(services: Services, function_id: str, ctx: CallContext,
             fired: Callable[[Any], dict[str, Any]] | None = None) -> Later:
    """Have ``function_id`` (a worker's backend) answer ``ctx``'s call; on success
    ``fired(result)`` is the ``stream`` event to fire, if any (with the call's observe
    hops)."""

    def start(answer: Answer, out: Output) -> None:
        def done(result: Any, error: p.ErrorBody | None, out: Output) -> None:
            if error is None and fired is not None:
                _fire_now(services, fired(result), out, ctx.depth)
            answer(result, error, out)

        assert services.call is not None
        services.call(function_id, ctx.data, done, out)

    return Later(start)


def _result_values(result: Any) -> tuple[Any, Any]:
    """``(old_value, new_value)`` of a backend's answer (``MISSING`` where absent)."""
    if not isinstance(result, dict):
        return MISSING, MISSING
    old = result.get("old_value")
    return MISSING if old is None else old, result.get("new_value", MISSING)


def stream_get(services: Services, ctx: CallContext) -> Any:
    scope, item = _item(ctx)
    backend = _backend(services, "get", scope[0])
    if backend is not None:
        return _forward(services, backend, ctx)
    if services.shared_streams is not None:
        return shared_state.stream_get(services.shared_streams, scope, item)
    return kept_values.read(_space(services), scope, item)


def stream_set(services: Services, ctx: CallContext) -> Any:
    return _write(services, ctx, "set", ctx.data.get("data"))


def stream_delete(services: Services, ctx: CallContext) -> Any:
    return _write(services, ctx, "delete", MISSING)


def _write(services: Services, ctx: CallContext, op: str, new: Any) -> Any:
    """``stream::set`` (``new``: the data) or ``stream::delete`` (``new``: ``MISSING``),
    on the stream's backend or in the built-in store."""
    scope, item = _item(ctx)
    wall = ctx.clock.wall
    backend = _backend(services, op, scope[0])
    if backend is not None:
        return _forward(services, backend, ctx, lambda result: change_event(
            wall, scope, item, _result_values(result)[0], new))
    if services.shared_streams is not None:
        return shared_state.stream_delete(services.shared_streams, scope, item) if new is MISSING \
            else shared_state.stream_set(services.shared_streams, scope, item, new)
    if new is MISSING and services.streams.get(scope, item) is MISSING:
        return {"old_value": None}
    old = kept_values.change(_space(services), ctx, scope, item, new)
    kept_values.fire_when_kept(services, ctx, "stream",
                               change_event(wall, scope, item, old, new))
    return {"old_value": or_none(old)} if new is MISSING else \
        kept_values.change_result(old, new)


def stream_update(services: Services, ctx: CallContext) -> Any:
    scope, item = _item(ctx)
    ops = ctx.data.get("ops")
    wall = ctx.clock.wall
    name = scope[0]
    backend = _backend(services, "update", name)
    if backend is not None:
        def fired(result: Any) -> dict[str, Any]:
            old, new = _result_values(result)
            return change_event(wall, scope, item, old, or_none(new))

        return _forward(services, backend, ctx, fired)
    get, put = _backend(services, "get", name), _backend(services, "set", name)
    if get is not None and put is not None:
        return _update_through(services, get, put, scope, item, parse_ops(ops), wall)
    if services.shared_streams is not None:
        return shared_state.stream_update(services.shared_streams, scope, item, ops)
    old, new, errors = kept_values.update(_space(services), ctx, scope, item, ops)
    kept_values.fire_when_kept(services, ctx, "stream",
                               change_event(wall, scope, item, old, new))
    return kept_values.change_result(old, new, errors)


def _update_through(services: Services, get: str, put: str, scope: Scope, item: str,
                    ops: Any, wall: float) -> Later:
    """``stream::update`` on a worker's backend: get, run the ops, set; one update of
    an item at a time, so concurrent updates through the daemon lose nothing."""
    key = ("stream::update", *scope, item)
    where = {"stream_name": scope[0], "group_id": scope[1], "item_id": item}
    call = services.call
    assert call is not None

    def start(answer: Answer, out: Output) -> None:
        def run(out: Output) -> None:
            call(get, where, got, out)

        def got(found: Any, error: p.ErrorBody | None, out: Output) -> None:
            if error is not None:
                answer(None, error, out)
                next_turn(services, key, out)
                return
            old = MISSING if found is None else found
            try:
                new, errors = apply_ops(old, ops)
            except CallError as exc:  # nested too deeply: nothing is written
                answer(None, p.ErrorBody(code=exc.code, message=exc.message), out)
                next_turn(services, key, out)
                return

            def kept(result: Any, error: p.ErrorBody | None, out: Output) -> None:
                if error is None:
                    _fire_now(services, change_event(wall, scope, item, old, new), out)
                    answer(kept_values.change_result(old, new, errors), None, out)
                else:
                    answer(None, error, out)
                next_turn(services, key, out)

            call(put, {**where, "data": new}, kept, out)

        in_turn(services, key, run, out)

    return Later(start)


def stream_list(services: Services, ctx: CallContext) -> Any:
    scope = _scope(ctx)
    backend = _backend(services, "list", scope[0])
    if backend is not None:
        return _forward(services, backend, ctx)
    if services.shared_streams is not None:
        return shared_state.stream_list(services.shared_streams, scope)
    return kept_values.values(_space(services), scope)


def stream_list_groups(services: Services, ctx: CallContext) -> Any:
    name = _name(ctx)
    backend = _backend(services, "list_groups", name)
    if backend is not None:
        return _forward(services, backend, ctx)
    if services.shared_streams is not None:
        return shared_state.stream_list_groups(services.shared_streams, name)
    return [group for stream, group in services.streams.scopes() if stream == name]


def stream_list_all(services: Services, ctx: CallContext) -> Any:
    """Every stream in the built-in store with its groups (the upstream shape)."""
    if services.shared_streams is not None:
        return shared_state.stream_list_all(services.shared_streams)
    groups: dict[str, list[str]] = {}
    for name, group in services.streams.scopes():
        groups.setdefault(name, []).append(group)
    streams = [{"id": name, "groups": names} for name, names in groups.items()]
    return {"stream": streams, "count": len(streams)}


def stream_send(services: Services, ctx: CallContext) -> Any:
    scope = _scope(ctx)
    kind = field(ctx.data, "type", str)
    target = ctx.data.get("id")
    if target is not None and not isinstance(target, str):
        raise CallError(ErrorCode.BAD_REQUEST, "'id' must be a string")
    payload = event(ctx.clock.wall, scope, target, "event", ctx.data.get("data"))
    payload["event"] = {"type": "event", "event": {"type": kind, "data": ctx.data.get("data")}}
    services.triggers.event("stream", payload, ctx.clock, ctx.out, ctx.depth)
    return None


FUNCTIONS = (
    BuiltinFunction("stream::get", "the item at {stream_name, group_id, item_id}, or null",
                    stream_get),
    BuiltinFunction("stream::set", "sets an item to data -> {old_value, new_value}; fires "
                    "stream triggers", stream_set),
    BuiltinFunction("stream::delete", "removes an item -> {old_value}; fires stream "
                    "triggers", stream_delete),
    BuiltinFunction("stream::update", "applies ops to an item atomically -> {old_value, "
                    "new_value, errors?}; fires stream triggers", stream_update),
    BuiltinFunction("stream::list", "every item of {stream_name, group_id}, a list",
                    stream_list),
    BuiltinFunction("stream::list_groups", "the groups of {stream_name} that hold items, "
                    "a list", stream_list_groups),
    BuiltinFunction("stream::list_all", "every stream in the built-in store with its groups "
                    "-> {stream: [{id, groups}], count}", stream_list_all),
    BuiltinFunction("stream::send", "sends {stream_name, group_id, type, data, id?} to the "
                    "stream's triggers (not stored)", stream_send),
)
