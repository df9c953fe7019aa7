"""Durable queues shared by several daemons (Redis Streams, ``drivers/redis_queues.py``).

The backend keeps every message; a daemon *holds* the ones it took for delivery, and
delivers them with the embedded engine's own rules (:class:`Queues`: concurrency, fifo
groups, retries with backoff, dead letters, conditions). What differs:

- ``enqueue`` writes the message to the backend, and the receipt waits for the
  backend's acknowledgement; nothing is delivered from here until a daemon takes it;
- the backend announces each new message of a lane; each daemon that serves the lane's
  function takes up to twice its concurrency (each message goes to one of them);
- success removes the message from the backend; a retry keeps it held, its attempts
  written; a dead letter moves to the queue's dead letters in the backend;
- every ``TICK_S`` the daemon tells the backend what it holds (so nobody else claims it),
  renews its topic subscriptions and the lanes it serves, and learns the lanes there
  are. Messages a daemon held and stopped telling of (it was killed) are taken by
  another after the visibility timeout (plus ``CLAIM_GRACE_MS``), attempts kept.
- A fifo lane is taken by one daemon at a time (a lease renewed each tick), so its
  groups keep their order across daemons.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from msgspec import json as msgspec_json

from iii_daemon.core.queues import (
    NO_CONSUMER,
    Lane,
    Message,
    QueueHost,
    Queues,
    group_in,
)
from iii_daemon.core.shared import SharedOps

if TYPE_CHECKING:
    from msgspec import Raw

    from iii_daemon.core.effects import AfterCommit, Output
    from iii_daemon.core.triggers.base import Binding
    from iii_daemon.core.writes import PutMessage

log = logging.getLogger("iii_daemon.core.shared_queues")

#: How often a daemon tells the backend what it holds (and learns the lanes).
TICK_S = 0.5
#: How long a subscription or "serves this lane" lasts without being renewed.
RENEW_TTL_MS = 5_000
#: Added to the visibility timeout before a held message counts as abandoned: its
#: holder renews it every ``TICK_S``.
CLAIM_GRACE_MS = 1_000
#: The least time a held message must be left alone before another daemon takes it.
MIN_CLAIM_IDLE_MS = 2_000
#: A fifo lane's lease: renewed each tick, lost to another daemon when not.
LEASE_MS = 5_000
#: A daemon holds at most this many times a lane's concurrency (retries included).
HOLD_FACTOR = 20

Key = tuple[str, str]


def lane_key(queue: str, function_id: str) -> str:
    """The lane's name in the backend: the queue's length in bytes keeps it unambiguous."""
    return f"{len(queue.encode())}:{queue}{function_id}"


def split_lane(lane: str) -> Key:
    size, _, rest = lane.partition(":")
    raw = rest.encode()
    return raw[:int(size)].decode(), raw[int(size):].decode()


class SharedQueueHost(QueueHost, Protocol):
    def queue_bindings(self) -> list[Binding]: ...

    def served_functions(self) -> frozenset[str]: ...


class SharedQueues(Queues):
    """The embedded engine's delivery, with the messages kept in a shared backend."""

    host: SharedQueueHost

    def __init__(self, host: SharedQueueHost, shared: SharedOps,
                 config: dict[str, dict[str, Any]] | None = None,
                 default_timeout_ms: int | None = None) -> None:
        super().__init__(host, config, default_timeout_ms)
        self.shared = shared
        #: This daemon start's name among the backend's consumers.
        self.consumer = uuid.uuid4().hex
        #: The lanes the backend has (learnt each tick, and from its announcements).
        self.known: set[Key] = set()
        #: The entries this daemon holds, by lane (ready, delayed for a retry, in flight).
        self._holding: dict[Key, set[str]] = {}
        self._wanting: dict[Key, None] = {}
        self._taking: set[Key] = set()
        self._cursors: dict[Key, str] = {}
        self._next_tick = 0.0
        self._ticking = False
        #: ``(queued, dead)`` in the whole backend, as of the last tick.
        self._totals = (0, 0)
        #: The functions some daemon serves, as of the last tick.
        self._served_anywhere: set[str] = set()
        #: The functions the backend knows this daemon serves (None: not known yet).
        self._told: frozenset[str] | None = None

    # --- in -------------------------------------------------------------------------------

    def load(self, rows: Iterable[PutMessage]) -> None:
        """Messages the embedded store kept stay there: say so, deliver nothing."""
        kept = sum(1 for _ in rows)
        if kept:
            log.warning("%d queued messages stay in the embedded store while the daemon "
                        "shares a backend; start it without --redis-url to deliver them",
                        kept)

    def enqueue(self, queue: str, function_id: str, data: Raw, out: Output,
                then: AfterCommit, *, delay_ms: int = 0, trigger_id: str | None = None,
                override: dict[str, Any] | None = None) -> Message:
        """Write a message to the backend; ``then(failure, out)`` once it acknowledged."""
        return self._put(queue, function_id, data, out, then, delay_ms, trigger_id,
                         self.policy(queue, override).delay_ms, route=False)

    def enqueue_topic(self, topic: str, data: Raw, out: Output, then: AfterCommit,
                      delay_ms: int = 0) -> Message:
        """A copy for every function a ``queue`` trigger on ``topic`` binds, on any
        daemon (the backend knows them); else it waits under the topic."""
        return self._put(topic, NO_CONSUMER, data, out, then, delay_ms, None,
                         self.policy(topic).delay_ms, route=True)

    def _put(self, queue: str, function_id: str, data: Raw, out: Output,
             then: AfterCommit, delay_ms: int, trigger_id: str | None, policy_delay_ms: int,
             route: bool) -> Message:
        wall = self.host.clock.wall
        message = Message(f"{self._id_prefix}{next(self._ids):012x}", queue, function_id,
                          bytes(data), 0, wall + (delay_ms + policy_delay_ms) / 1000, wall,
                          None, trigger_id)
        if message.available_at > wall:  # released by the tick that follows its time
            self._next_tick = min(self._next_tick, message.available_at)

        def done(result: Any, error: str | None, out: Output) -> None:
            if error is None and not route:  # whether a daemon serves it, said just now
                served = self._served_anywhere
                served.add(function_id) if result else served.discard(function_id)
            then(None if error is None else f"{self.shared.describe}: {error}", out)

        self.shared.request("queue_put", {
            "message": _fields(message, route), "due_ms": _ms(message.available_at),
            "now_ms": _ms(wall)}, done, out)
        return message

    def adopt(self, topic: str, out: Output) -> int:
        """A ``queue`` trigger bound here: subscribe it in the backend; the first to
        subscribe takes what waited under the topic."""
        expiry = _ms(self.host.clock.wall) + RENEW_TTL_MS
        for binding in self.host.queue_bindings():
            if binding.config.get("topic") == topic:
                self.shared.request("queue_adopt", {
                    "topic": topic, "trigger": binding.id,
                    "function_id": binding.function_id, "expiry_ms": expiry}, _quiet, out)
        return 0

    # --- taking from the backend ------------------------------------------------------------

    def function_added(self, function_id: str) -> None:
        super().function_added(function_id)
        self._next_tick = 0.0  # tell the backend soon: others enqueue for it
        for key in self.known:
            if key[1] == function_id:
                self._wanting[key] = None

    def announced(self, lane: str, out: Output) -> None:
        """The backend has a new message in ``lane``."""
        key = split_lane(lane)
        self.known.add(key)
        self._wanting[key] = None
        self._take(out)

    def pump(self, out: Output, limit: int | None = None) -> None:
        super().pump(out, limit)
        if self._wanting:
            self._take(out)

    def _take(self, out: Output) -> None:
        """Ask the backend for messages of each lane wanted, as many as there is room for:
        twice the concurrency, less what is ready or in flight here; and all it holds
        (retries waiting included) at most ``HOLD_FACTOR`` times the concurrency, so a
        lane whose messages all fail is not drained into one daemon's retries."""
        serves = self.host.serves
        for key in list(self._wanting):
            if key in self._taking:
                continue  # asked already: its answer says whether there is more
            queue, function_id = key
            if function_id == NO_CONSUMER or not serves(function_id):
                del self._wanting[key]
                continue
            lane = self._local_lane(queue, function_id)
            busy = len(lane.ready) + len(lane.in_flight)
            room = min(2 * lane.policy.concurrency - busy,
                       HOLD_FACTOR * lane.policy.concurrency - busy - len(lane.delayed))
            if room <= 0:
                continue  # a delivery that ends brings a pump, and this again
            del self._wanting[key]
            self._taking.add(key)
            visibility = lane.policy.visibility_timeout_ms or self._default_timeout_ms or 0
            self.shared.request("queue_take", {
                "lane": lane_key(queue, function_id), "consumer": self.consumer,
                "count": room, "cursor": self._cursors.get(key, "0-0"),
                "min_idle_ms": max(visibility + CLAIM_GRACE_MS, MIN_CLAIM_IDLE_MS),
                "lease_ms": LEASE_MS if lane.policy.type == "fifo" else 0,
            }, self._took(key, lane, room), out)

    def _took(self, key: Key, lane: Lane, room: int) -> Any:
        def took(result: Any, error: str | None, out: Output) -> None:
            self._taking.discard(key)
            if error is not None:
                return  # the tick asks again (an outage is logged by the driver)
            self._cursors[key] = result["cursor"]
            holding = self._holding.setdefault(key, set())
            wall = self.host.clock.wall
            for entry, fields, attempts in result["entries"]:
                if entry in holding:
                    continue  # held already (taken again after an outage)
                holding.add(entry)
                self._place(lane, _message(fields, entry, attempts, wall, lane))
            if len(result["entries"]) >= room:
                self._wanting[key] = None  # maybe more
            self.pump(out)

        return took

    def _local_lane(self, queue: str, function_id: str) -> Lane:
        """The lane here, its policy from the ``queue`` trigger that binds it here."""
        override = next((b.config.get("queue_config") for b in self.host.queue_bindings()
                         if b.function_id == function_id and b.config.get("topic") == queue),
                        None)
        return self._lane_with(queue, function_id, override)

    # --- done with a message ----------------------------------------------------------------

    def _write_acks(self, acks: list[Message], out: Output) -> None:
        by_lane: dict[Key, list[str]] = {}
        for message in acks:
            by_lane.setdefault((message.queue, message.function_id), []).append(message.entry)
        for key, entries in by_lane.items():
            self._let_go(key, entries)
            self.shared.request("queue_ack", {"lane": lane_key(*key), "entries": entries},
                                _quiet, out)

    def _write_again(self, message: Message, out: Output) -> None:
        key = (message.queue, message.function_id)
        lane = lane_key(*key)
        if message.dead:
            self._let_go(key, [message.entry])
            self.shared.request("queue_dead", {
                "lane": lane, "entry": message.entry, "failed_ms": _ms(message.available_at),
                "message": _fields(message, False)}, _quiet, out)
        else:  # its holder retries it; another daemon that takes it over counts on
            self.shared.request("queue_attempt", {
                "lane": lane, "entry": message.entry, "attempts": message.attempts,
                "error": msgspec_json.encode(message.last_error)}, _quiet, out)

    def _unserved(self, lane: Lane, message: Message, out: Output) -> None:
        """Nobody here serves it any more: back to the backend, for any daemon."""
        self._give_back(lane, [message], out)

    def _give_back(self, lane: Lane, messages: list[Message], out: Output) -> None:
        key = (lane.queue, lane.function_id)
        for message in messages:
            self._let_go(key, [message.entry])
            self.shared.request("queue_give_back", {
                "lane": lane_key(*key), "entry": message.entry,
                "message": _fields(message, False)}, _quiet, out)

    def give_back_all(self, out: Output) -> None:
        """Every message held here goes back to the backend, those in flight too (the
        daemon stops: their answers would never be written)."""
        for lane in self.lanes.values():
            messages = [*lane.in_flight.values(), *_waiting(lane)]
            lane.in_flight.clear()
            if messages and lane.function_id != NO_CONSUMER:
                self._give_back(lane, messages, out)

    def _let_go(self, key: Key, entries: list[str]) -> None:
        holding = self._holding.get(key)
        if holding is not None:
            holding.difference_update(entries)

    def dropped(self, queue: str, out: Output) -> None:
        """A purge of ``queue`` (on any daemon): drop the messages held here that are not
        in flight."""
        for (name, function_id), lane in self.lanes.items():
            if name != queue:
                continue
            messages = _waiting(lane)
            if messages:
                entries = [m.entry for m in messages]
                self._let_go((name, function_id), entries)
                self.shared.request("queue_ack", {
                    "lane": lane_key(name, function_id), "entries": entries,
                    "dropped": True}, _quiet, out)

    # --- keeping in touch -------------------------------------------------------------------

    def next_due(self) -> float | None:
        due = super().next_due()
        if self._ticking:  # the next one is set when this one is answered
            return due
        return self._next_tick if due is None else min(due, self._next_tick)

    def tick(self, out: Output) -> None:
        """Every ``TICK_S``: tell the backend what is held here, renew subscriptions and
        served lanes, give back what nobody here serves any more, and take again from
        every lane served (messages abandoned by a daemon that died, announcements
        missed)."""
        wall = self.host.clock.wall
        if wall < self._next_tick or self._ticking:
            return
        self._ticking = True
        self._next_tick = wall + TICK_S
        serves = self.host.serves
        for key, lane in list(self.lanes.items()):
            if key[1] != NO_CONSUMER and not serves(key[1]) and (lane.ready or lane.delayed):
                self._give_back(lane, _waiting(lane), out)
        served = [key for key in self.known if key[1] != NO_CONSUMER and serves(key[1])]
        functions = self.host.served_functions()
        hold = []
        for key, entries in self._holding.items():
            held = self.lanes.get(key)
            fifo = held is not None and held.policy.type == "fifo"
            if entries or (fifo and key in served):
                hold.append([lane_key(*key), sorted(entries), LEASE_MS if fifo else 0])
        self.shared.request("queue_tick", {
            "c": self.consumer, "now": _ms(wall), "hold": hold, "ttl": RENEW_TTL_MS,
            "subs": [[b.config["topic"], b.id, b.function_id]
                     for b in self.host.queue_bindings()],
            # What this daemon serves, when the backend does not know it yet.
            **({} if functions == self._told else {"functions": sorted(functions)}),
        }, self._ticked(functions), out)
        for key in served:
            self._wanting[key] = None
        self._take(out)

    def _ticked(self, functions: frozenset[str]) -> Any:
        def ticked(result: Any, error: str | None, out: Output) -> None:
            self._ticking = False
            if error is None:
                self._told = functions if result.get("known") else None
                self._learn(result)

        return ticked

    def _learn(self, result: dict[str, Any]) -> None:
        """What a tick's answer tells: the lanes, the functions served anywhere, the
        entries another daemon took over, the totals."""
        self.known = {split_lane(lane) for lane in listed(result.get("lanes"))}
        self._served_anywhere = set(listed(result.get("serving")))
        lost = result.get("lost") or {}
        for lane_name, entries in lost.items():  # taken over by another daemon
            key = split_lane(lane_name)
            self._let_go(key, entries)
            lane = self.lanes.get(key)
            if lane is not None:
                gone = set(entries)
                lane.ready = type(lane.ready)(m for m in lane.ready if m.entry not in gone)
                lane.delayed = [d for d in lane.delayed if d[2].entry not in gone]
                lane.delayed.sort()
        self._totals = (int(result.get("queued", 0)), int(result.get("dead", 0)))

    # --- what can be read of them here ----------------------------------------------------

    def served(self, function_id: str) -> bool:
        return self.host.serves(function_id) or function_id in self._served_anywhere

    def count(self) -> int:
        """Messages kept in the backend (waiting, held, delayed, dead), as of the last
        tick."""
        return self._totals[0]

    def dead_count(self) -> int:
        return self._totals[1]


def _waiting(lane: Lane) -> list[Message]:
    """Take the lane's messages that are not in flight out of it."""
    messages = [*lane.ready, *(entry[2] for entry in lane.delayed)]
    lane.ready.clear()
    lane.delayed.clear()  # their entries in the due heap are stale now, and skipped
    # Only the groups of messages in flight stay busy (a retry waiting held its own).
    lane.busy_groups = {m.group for m in lane.in_flight.values() if m.group is not None}
    return messages


def _fields(message: Message, route: bool) -> dict[str, Any]:
    """A message as the backend keeps it."""
    return {"fn": message.function_id, "trigger": message.trigger_id or "",
            "id": message.id, "queue": message.queue, "data": message.data,
            "attempts": message.attempts, "enq": repr(message.enqueued_at),
            "err": msgspec_json.encode(message.last_error) if message.last_error else b"",
            "route": "1" if route else ""}


def _message(fields: dict[str, bytes], entry: str, attempts: bytes | None, wall: float,
             lane: Lane) -> Message:
    """A message taken from the backend, with the attempts its last holder wrote."""
    tried = int(fields.get("attempts") or 0)
    error = fields.get("err") or b""
    if attempts:
        count, _, error = attempts.partition(b"|")
        tried = int(count)
    data = fields.get("data", b"null")
    return Message(fields.get("id", b"").decode(), lane.queue, lane.function_id, data,
                   tried, wall, float(fields.get("enq") or wall),
                   group_in(lane.policy, data), fields.get("trigger", b"").decode() or None,
                   msgspec_json.decode(error) if error else None, entry=entry)


def listed(value: Any) -> list[Any]:
    """A list from the backend's JSON (an empty one may come as ``{}``)."""
    return value if isinstance(value, list) else []


def _ms(wall: float) -> int:
    return int(wall * 1000)


def _quiet(result: Any, error: str | None, out: Output) -> None:
    """After an operation nobody waits for: a failure leaves the message where it is in
    the backend, delivered again later (at least once); an outage is logged there."""
