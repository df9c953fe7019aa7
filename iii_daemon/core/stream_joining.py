"""The router's side of the stream socket: clients join and leave streams
(:mod:`iii_daemon.core.stream_clients` keeps who listens to what), and every stream
event (a change, a ``stream::send``; here, through Redis or from a bridged engine)
reaches the clients that joined it as :class:`StreamPush` effects.

A join runs the ``stream:join`` triggers first (any answering ``{unauthorized: true}``,
failing, or skipped for being too busy refuses it), then reads the group or item
(``stream::list`` / ``stream::get``, wherever the stream is served) and sends it as the
subscription's ``sync``. A leave, and each subscription of a client that goes, fires
``stream:leave``. Joins, leaves and refusals are events (``stream.*``) for watchers.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from iii_daemon.core.calls import Calls
from iii_daemon.core.effects import EVENTS, Output, StreamPush
from iii_daemon.core.errors import CallError
from iii_daemon.core.rbac import AuthRefused
from iii_daemon.core.stream_clients import (
    Client,
    StreamClients,
    Subscription,
    error,
    for_subscription,
    parse_join,
    stream_frame,
    unauthorized,
)
from iii_daemon.core.triggers.stream_presence import StreamJoinType
from iii_sdk import protocol as p

log = logging.getLogger("iii_daemon.core.stream_joining")

#: How long a ``stream:join`` function may take before the join is refused.
JOIN_TIMEOUT_MS = 10_000
#: The source of the reads that make a join's sync.
SOURCE = "stream socket"

_decode = msgspec.json.Decoder().decode


def stream_context(answer: Any) -> Any:
    """The ``context`` of a stream auth function's answer (upstream
    ``StreamAuthResult``: ``{context?}``; null lets the client in without one).

    Raises:
        AuthRefused: the answer is not an object or null.
    """
    if answer is None:
        return None
    if not isinstance(answer, dict):
        raise AuthRefused(f"the auth function answered {type(answer).__name__}, not a "
                          f"StreamAuthResult object")
    return answer.get("context")


def _refuses(result: Any) -> bool:
    """Whether a ``stream:join`` function's answer (``StreamJoinResult``) refuses."""
    return isinstance(result, dict) and result.get("unauthorized") is True


class StreamJoining(Calls):
    stream_clients: StreamClients

    # --- entry points (the stream socket's driver) ---------------------------------------

    def stream_client_opened(self, client_id: int, context: Any, addr: str,
                             now: float) -> Output:
        """A client passed the door (its auth function's ``context``, if any)."""
        self._now = now
        self.stream_clients.open(client_id, context, addr)
        return []

    def stream_client_said(self, client_id: int, frame: bytes | str, now: float) -> Output:
        """A frame from a client: ``{type: "join"|"leave", data: {...}}``."""
        out: Output = []
        self._now = now
        client = self.stream_clients.clients.get(client_id)
        if client is None:
            return out
        try:
            message = _decode(frame)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            _push(client.id, [error("not a JSON object")], out)  # nested too deep, too
            return out
        kind = message.get("type") if isinstance(message, dict) else None
        data = message.get("data") if isinstance(message, dict) else None
        if kind == "join":
            self._join(client, data, out)
        elif kind == "leave":
            subscription_id = data.get("subscriptionId") if isinstance(data, dict) else None
            subscription = None if not isinstance(subscription_id, str) \
                else self.stream_clients.leave(client, subscription_id)
            if subscription is not None:
                self._left(client, subscription, out)
        else:
            _push(client.id, [error("a frame is {\"type\": \"join\" or \"leave\", "
                                    "\"data\": {...}}")], out)
        return out

    def stream_client_closed(self, client_id: int, now: float) -> Output:
        """A client went: each subscription it held leaves."""
        out: Output = []
        self._now = now
        client = self.stream_clients.close(client_id)
        if client is not None:
            for subscription in client.subscriptions.values():
                self._left(client, subscription, out)
        return out

    def _stream_heard(self, event: dict[str, Any], out: Output) -> None:
        """A ``stream`` event: to the clients that joined its group or item."""
        frames = self.stream_clients.changed(event)
        if frames:
            out.append((EVENTS, StreamPush(frames)))

    # --- join and leave -------------------------------------------------------------------

    def _join(self, client: Client, data: Any, out: Output) -> None:
        subscription_id = data.get("subscriptionId") if isinstance(data, dict) else None
        try:
            fields = parse_join(data)
            subscription = self.stream_clients.join(client, *fields)
        except CallError as exc:
            _push(client.id, [error(f"cannot join: {exc.message}", subscription_id
                                    if isinstance(subscription_id, str) else None)], out)
            return
        joins = self.triggers.types["stream:join"]
        assert isinstance(joins, StreamJoinType)
        bindings = list(joins.bound.values())
        if not bindings:
            self._sync(client, subscription, out)
            return
        payload = {**subscription.event(), "context": client.context}
        waiting = len(bindings)
        refusals: list[str] = []

        def answered(skipped: str | None, result: Any, failure: p.ErrorBody | None,
                     out: Output) -> None:
            nonlocal waiting
            waiting -= 1
            if failure is not None:
                refusals.append(f"{failure.code}: {failure.message}")
            elif skipped is not None and skipped.startswith("still_running"):
                refusals.append("too many joins wait for the stream:join functions")
            elif skipped is None and _refuses(p.from_raw(result or p.NULL)):
                refusals.append("unauthorized")
            if waiting or not self.stream_clients.is_current(subscription):
                return  # more to hear; or it left, or its client went, meanwhile
            if refusals:
                self.stream_clients.leave(client, subscription.id)
                _push(client.id, [unauthorized(subscription)], out)
                self.record("stream.refused", out, **subscription.event(),
                            client=client.addr, reason="; ".join(refusals))
            else:
                self._sync(client, subscription, out)

        for binding in bindings:
            self.triggers.fire(binding, payload, self.clock, out, answered, JOIN_TIMEOUT_MS)

    def _sync(self, client: Client, subscription: Subscription, out: Output) -> None:
        """Read what the subscription joined and send it as its ``sync``; then it is
        joined (an event, as with every join)."""
        where = {"stream_name": subscription.stream_name, "group_id": subscription.group_id}
        if subscription.item_id is not None:
            where["item_id"] = subscription.item_id

        def got(result: Any, failure: p.ErrorBody | None, out: Output) -> None:
            if not self.stream_clients.is_current(subscription):
                return
            if failure is not None:
                self.stream_clients.leave(client, subscription.id)
                _push(client.id, [error(f"cannot read {subscription.stream_name}/"
                                        f"{subscription.group_id}: {failure.message}",
                                        subscription.id)], out)
                return
            body = stream_frame(subscription.stream_name, subscription.group_id,
                                subscription.item_id, int(self.clock.wall * 1000),
                                {"type": "sync", "data": result or p.NULL})
            _push(client.id, self.stream_clients.synced(
                subscription, for_subscription(subscription, body)), out)
            self.record("stream.joined", out, **subscription.event(), client=client.addr)

        function_id = "stream::list" if subscription.item_id is None else "stream::get"
        self.call_internal(function_id, p.to_raw(where), got, self.clock, out, source=SOURCE)

    def _left(self, client: Client, subscription: Subscription, out: Output) -> None:
        if subscription.waiting is not None:
            return  # never joined (refused or still deciding): nothing to undo
        self.record("stream.left", out, **subscription.event(), client=client.addr)
        self.triggers.event("stream:leave", {**subscription.event(),
                                             "context": client.context}, self.clock, out)


def _push(client_id: int, frames: list[bytes], out: Output) -> None:
    out.append((EVENTS, StreamPush([(client_id, frame) for frame in frames])))
