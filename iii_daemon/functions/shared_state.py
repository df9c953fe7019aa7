"""``state::*``, ``stream::*`` (of streams no worker serves) and ``publish`` when several
daemons share a backend (Redis): each call is an operation the backend runs
(``SharedOp``), answered once it did. What a change means for ``state`` and ``stream``
triggers comes back to every daemon from the backend, so a local change fires nothing
here (see ``core/shared_events.py``).

The shapes are those of the embedded store's functions (``functions/state.py``): the
same contract tests run against both.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iii_daemon.core.builtin import Answer, CallContext, Later, field
from iii_daemon.core.errors import CallError
from iii_daemon.core.kept_values import change_result
from iii_daemon.core.unsettled import or_none
from iii_daemon.functions.update_ops import parse_ops
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode

if TYPE_CHECKING:
    from iii_daemon.core.builtin import Services
    from iii_daemon.core.effects import Output
    from iii_daemon.core.shared import SharedOps


def ask(shared: SharedOps, kind: str, args: dict[str, Any],
         finish: Callable[[Any], Any]) -> Later:
    """The backend runs ``kind``; the caller gets ``finish(its result)``, or
    ``backend_unavailable`` naming the backend when it could not."""

    def start(answer: Answer, out: Output) -> None:
        def done(result: Any, error: str | None, out: Output) -> None:
            if error is not None:
                answer(None, p.ErrorBody(code=ErrorCode.BACKEND_UNAVAILABLE,
                                         message=f"{shared.describe}: {error}"), out)
                return
            try:
                value = finish(result)
            except CallError as exc:
                answer(None, p.ErrorBody(code=exc.code, message=exc.message), out)
                return
            answer(value, None, out)

        shared.request(kind, args, done, out)

    return Later(start)


def _shared(services: Services) -> SharedOps:
    assert services.shared_state is not None  # only called when there is one
    return services.shared_state


def _where(ctx: CallContext) -> dict[str, Any]:
    return {"scope": field(ctx.data, "scope", str), "key": field(ctx.data, "key", str)}


def state_get(services: Services, ctx: CallContext) -> Later:
    shared = _shared(services)
    return ask(shared, "state_get", _where(ctx), or_none)


def state_set(services: Services, ctx: CallContext) -> Later:
    shared = _shared(services)
    value = ctx.data.get("value")
    return ask(shared, "state_set", {**_where(ctx), "value": value},
                lambda old: change_result(old, value))


def state_delete(services: Services, ctx: CallContext) -> Later:
    shared = _shared(services)
    return ask(shared, "state_delete", _where(ctx), lambda old: {"old_value": or_none(old)})


def state_update(services: Services, ctx: CallContext) -> Later:
    shared = _shared(services)
    ops = ctx.data.get("ops")
    parse_ops(ops)  # a malformed op is refused here, before anything is sent
    return ask(shared, "state_update", {**_where(ctx), "ops": ops}, _updated)


def _updated(result: dict[str, Any]) -> Any:
    """What an update answers, from what the backend did."""
    refused = result.get("refused")
    if refused is not None:  # the ops could not run on the value (too deep)
        raise CallError(*refused)
    return change_result(result["old"], result["new"], result["errors"])


def state_list(services: Services, ctx: CallContext) -> Later:
    shared = _shared(services)
    return ask(shared, "state_list", {"scope": field(ctx.data, "scope", str)},
                lambda values: values)


def state_list_groups(services: Services, ctx: CallContext) -> Later:
    shared = _shared(services)
    return ask(shared, "state_groups", {}, lambda groups: {"groups": groups})


def publish(services: Services, ctx: CallContext) -> Later:
    """Through the backend: every daemon (this one too) fires its subscribers when the
    message comes back to it; the answer says how many daemons listen."""
    shared = services.shared
    assert shared is not None  # only called when there is one
    topic = field(ctx.data, "topic", str)
    data = ctx.data.get("data")
    subscribers = len(services.triggers.types["subscribe"].matching(  # type: ignore[attr-defined]
        {"topic": topic, "data": data}))
    return ask(shared, "publish", {"id": uuid.uuid4().hex, "topic": topic, "data": data},
                lambda daemons: {"subscribers": subscribers, "daemons": daemons})


# --- stream items (the built-in store's part of functions/stream.py) ------------------------


def stream_get(shared: SharedOps, scope: tuple[str, str], item: str) -> Later:
    return ask(shared, "stream_get", {"scope": list(scope), "key": item}, or_none)


def stream_set(shared: SharedOps, scope: tuple[str, str], item: str, data: Any) -> Later:
    return ask(shared, "stream_set", {"scope": list(scope), "key": item, "value": data},
                lambda old: change_result(old, data))


def stream_delete(shared: SharedOps, scope: tuple[str, str], item: str) -> Later:
    return ask(shared, "stream_delete", {"scope": list(scope), "key": item},
                lambda old: {"old_value": or_none(old)})


def stream_update(shared: SharedOps, scope: tuple[str, str], item: str, ops: Any) -> Later:
    parse_ops(ops)
    return ask(shared, "stream_update", {"scope": list(scope), "key": item, "ops": ops},
                _updated)


def stream_list(shared: SharedOps, scope: tuple[str, str]) -> Later:
    return ask(shared, "stream_list", {"scope": list(scope)}, lambda values: values)


def stream_list_groups(shared: SharedOps, name: str) -> Later:
    return ask(shared, "stream_groups", {},
                lambda scopes: [group for stream, group in scopes if stream == name])


def stream_list_all(shared: SharedOps) -> Later:
    def finish(scopes: list[list[str]]) -> Any:
        groups: dict[str, list[str]] = {}
        for name, group in scopes:
            groups.setdefault(name, []).append(group)
        streams = [{"id": name, "groups": names} for name, names in groups.items()]
        return {"stream": streams, "count": len(streams)}

    return ask(shared, "stream_groups", {}, finish)
