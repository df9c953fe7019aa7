"""Who listens on the stream socket, to what, and the frames they get (pure).

A client (a browser page, any WebSocket client) joins a group of a stream, or one item
of it, under a ``subscriptionId`` of its choosing. On join it gets the group's items (or
the item) as a ``sync`` event; then every change of what it joined as ``create``,
``update`` or ``delete``, and what ``stream::send`` sends as ``event``: the upstream
engine's frames, ``{type: "stream", timestamp, streamName, groupId, id, event}``, plus
the ``subscriptionId`` they are for (one client may join a group and an item of it).

Changes that come while a join still reads its sync wait behind it, so a client never
sees a change before the state it applies to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from iii_daemon.core.errors import CallError
from iii_sdk.error_codes import ErrorCode

_encode = msgspec.json.Encoder().encode
#: Longest id a client may use (subscription, stream, group or item).
MAX_ID = 256


@dataclass(slots=True, eq=False)
class Subscription:
    client: int
    id: str
    stream_name: str
    group_id: str
    item_id: str | None
    #: ``{"subscriptionId":"...",`` : a frame for it is this plus the body after ``{``.
    prefix: bytes
    #: Frames held until the sync is sent; None once it was.
    waiting: list[bytes] | None = field(default_factory=list)
    #: Their bytes (bounded: see ``StreamClients.max_waiting_bytes``).
    waiting_bytes: int = 0

    def event(self) -> dict[str, Any]:
        """Its facts for ``stream:join`` / ``stream:leave`` and events (upstream names)."""
        return {"subscription_id": self.id, "stream_name": self.stream_name,
                "group_id": self.group_id, "id": self.item_id}


@dataclass(slots=True, eq=False)
class Client:
    id: int
    #: The auth function's ``context`` (None without one).
    context: Any
    #: The peer's address, for events and logs.
    addr: str
    subscriptions: dict[str, Subscription] = field(default_factory=dict)


def parse_join(data: Any) -> tuple[str, str, str, str | None]:
    """``(subscriptionId, streamName, groupId, id)`` of a join's ``data``.

    Raises:
        CallError: a field is missing or not a short string.
    """
    if not isinstance(data, dict):
        raise CallError(ErrorCode.BAD_REQUEST, "'data' must be an object")
    found: list[str | None] = []
    for name, optional in (("subscriptionId", False), ("streamName", False),
                           ("groupId", False), ("id", True)):
        value = data.get(name)
        if value is None and optional:
            found.append(None)
            continue
        if not isinstance(value, str) or not value or len(value) > MAX_ID:
            raise CallError(ErrorCode.BAD_REQUEST, f"'{name}' must be a string of 1 to "
                                                   f"{MAX_ID} characters")
        found.append(value)
    subscription, stream_name, group_id, item_id = found
    assert subscription is not None and stream_name is not None and group_id is not None
    return subscription, stream_name, group_id, item_id


def stream_frame(stream_name: str, group_id: str, item_id: str | None,
                 timestamp: int | None, event: Any) -> bytes:
    """A frame's body (without a subscription), JSON."""
    return _encode({"type": "stream", "timestamp": timestamp, "streamName": stream_name,
                    "groupId": group_id, "id": item_id, "event": event})


def for_subscription(subscription: Subscription, body: bytes) -> bytes:
    """``body`` (a JSON object) as the frame of ``subscription``."""
    return subscription.prefix + body[1:]


def unauthorized(subscription: Subscription | None = None) -> bytes:
    """What a refused client (no subscription) or join gets."""
    if subscription is None:
        return b'{"type":"unauthorized"}'
    return _encode({"type": "unauthorized", "subscriptionId": subscription.id,
                    "streamName": subscription.stream_name,
                    "groupId": subscription.group_id, "id": subscription.item_id})


def error(message: str, subscription_id: str | None = None) -> bytes:
    """A frame that says what the client got wrong (a bad join, too many)."""
    return _encode({"type": "error", "subscriptionId": subscription_id,
                    "error": {"code": ErrorCode.BAD_REQUEST, "message": message}})


class StreamClients:
    """Every stream-socket client and its subscriptions, indexed by what they joined."""

    #: Bytes of changes a subscription holds while its sync is read (a slow backend, a
    #: flood of changes); past them the join fails rather than hold more.
    max_waiting_bytes = 4 * 1024 * 1024

    def __init__(self, max_subscriptions: int = 256) -> None:
        self.max_subscriptions = max_subscriptions
        self.clients: dict[int, Client] = {}
        #: ``(stream, group)`` -> the subscriptions to it (group and item ones).
        self._by_group: dict[tuple[str, str], dict[int, Subscription]] = {}

    def __len__(self) -> int:
        return len(self.clients)

    def subscriptions(self) -> int:
        return sum(len(c.subscriptions) for c in self.clients.values())

    def open(self, client_id: int, context: Any, addr: str) -> Client:
        client = self.clients[client_id] = Client(client_id, context, addr)
        return client

    def join(self, client: Client, subscription_id: str, stream_name: str, group_id: str,
             item_id: str | None) -> Subscription:
        """A new subscription, in the index at once (changes wait for its sync).

        Raises:
            CallError: the id is taken on this client, or it has too many.
        """
        if subscription_id in client.subscriptions:
            raise CallError(ErrorCode.BAD_REQUEST,
                            f"subscription '{subscription_id}' is joined already")
        if len(client.subscriptions) >= self.max_subscriptions:
            raise CallError(ErrorCode.BAD_REQUEST,
                            f"a client may hold {self.max_subscriptions} subscriptions "
                            f"([streams] max_subscriptions)")
        prefix = b'{"subscriptionId":' + _encode(subscription_id) + b","
        subscription = Subscription(client.id, subscription_id, stream_name, group_id,
                                    item_id, prefix)
        client.subscriptions[subscription_id] = subscription
        self._by_group.setdefault((stream_name, group_id), {})[id(subscription)] = \
            subscription
        return subscription

    def leave(self, client: Client, subscription_id: str) -> Subscription | None:
        subscription = client.subscriptions.pop(subscription_id, None)
        if subscription is not None:
            self._unindex(subscription)
        return subscription

    def close(self, client_id: int) -> Client | None:
        """Forget a client; it is returned with the subscriptions it held."""
        client = self.clients.pop(client_id, None)
        if client is not None:
            for subscription in client.subscriptions.values():
                self._unindex(subscription)
        return client

    def _unindex(self, subscription: Subscription) -> None:
        key = (subscription.stream_name, subscription.group_id)
        subscribed = self._by_group.get(key)
        if subscribed is not None:
            subscribed.pop(id(subscription), None)
            if not subscribed:
                del self._by_group[key]

    def is_current(self, subscription: Subscription) -> bool:
        client = self.clients.get(subscription.client)
        return client is not None and client.subscriptions.get(subscription.id) is subscription

    def synced(self, subscription: Subscription, frame: bytes) -> list[bytes]:
        """The sync frame and what waited behind it, in order; from now on changes go
        straight out."""
        waiting, subscription.waiting = subscription.waiting or [], None
        return [frame, *waiting]

    def changed(self, event: dict[str, Any]) -> list[tuple[int, bytes]]:
        """The frames a stream event (a trigger payload of ``functions/stream.py``)
        makes for the clients that joined its group or item, by client id."""
        subscribed = self._by_group.get((event["streamName"], event["groupId"]))
        if not subscribed:
            return []
        item_id = event["id"]
        rest = stream_frame(event["streamName"], event["groupId"], item_id,
                            event.get("timestamp"), event.get("event"))[1:]
        frames: list[tuple[int, bytes]] = []
        overflowed: list[Subscription] = []
        for subscription in subscribed.values():
            if subscription.item_id is not None and subscription.item_id != item_id:
                continue
            frame = subscription.prefix + rest  # one body, each subscription's id first
            if subscription.waiting is None:
                frames.append((subscription.client, frame))
            elif subscription.waiting_bytes + len(frame) > self.max_waiting_bytes:
                overflowed.append(subscription)
            else:
                subscription.waiting.append(frame)
                subscription.waiting_bytes += len(frame)
        for subscription in overflowed:  # its sync, when it comes, finds it gone
            self.leave(self.clients[subscription.client], subscription.id)
            frames.append((subscription.client, error(
                f"cannot join: {subscription.waiting_bytes} bytes of changes came while "
                f"its sync was read", subscription.id)))
        return frames
