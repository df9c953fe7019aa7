"""Durable queues, in the core: messages, lanes, delivery, retries, dead letters.

A message enters its queue once its write committed (the caller's receipt waits for
that too), so nothing undelivered exists only in memory. It is delivered through the
ordinary routing path as a call the daemon makes itself; success deletes it, a failure
or timeout counts as an attempt and schedules a retry with backoff, and after
``1 + max_retries`` attempts it becomes a dead letter with its last error. A message
for a function nobody serves waits, without using an attempt. Nothing about delivery is
written until it ends (an acknowledgement deletes the row), so messages in flight when
the daemon dies are simply delivered again after it restarts: at least once.

Messages are kept per *lane*, one queue and one function: concurrency, FIFO order
(``type = "fifo"``: one message in flight per group, in order) and counts are per lane.
A topic message that no ``queue`` trigger consumes yet waits in the topic's
:data:`NO_CONSUMER` lane, durably, until the first one binds and adopts it.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from msgspec import Raw

from iii_daemon.core.effects import EVENTS, Persist
from iii_daemon.core.writes import DropMessage, PutMessage
from iii_sdk import protocol as p
from iii_sdk.config import QUEUE_CHOICES, QUEUE_RANGES

if TYPE_CHECKING:
    from iii_daemon.core.effects import AfterCommit, Output
    from iii_daemon.core.triggers.base import Binding, Clock

#: The most a message may be delayed (the timeout cap: about 24.8 days).
MAX_DELAY_MS = 2**31 - 1

#: The function id of a topic message nobody consumes yet: it waits under the topic (in
#: the lane ``(topic, NO_CONSUMER)``, never served) for the first ``queue`` trigger bound
#: to the topic, which adopts it.
NO_CONSUMER = ""


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """How a queue delivers (config ``[queues.NAME]``, or a queue trigger's
    ``queue_config``)."""

    max_retries: int = 3
    backoff_ms: int = 1000
    #: ``exponential``: backoff_ms * 2^(attempt-1); ``fixed``: backoff_ms every time.
    backoff: str = "exponential"
    concurrency: int = 10
    #: ``standard`` or ``fifo`` (in order per message group, one at a time).
    type: str = "standard"
    message_group_field: str | None = None
    #: How long one delivery may take (None: the daemon's call timeout).
    visibility_timeout_ms: int | None = None
    #: Added to every message's availability (upstream ``delaySeconds``).
    delay_ms: int = 0

    def retry_delay_s(self, attempts: int) -> float:
        if self.backoff == "fixed":
            return self.backoff_ms / 1000
        return float(self.backoff_ms * 2 ** (max(attempts, 1) - 1)) / 1000


#: ``[queues.NAME]`` keys and the upstream ``queue_config`` keys, as policy fields.
CONFIG_KEYS: dict[str, tuple[str, type]] = {
    "max_retries": ("max_retries", int), "maxRetries": ("max_retries", int),
    "backoff_ms": ("backoff_ms", int), "backoffDelayMs": ("backoff_ms", int),
    "backoff": ("backoff", str), "backoffType": ("backoff", str),
    "concurrency": ("concurrency", int),
    "type": ("type", str),
    "message_group_field": ("message_group_field", str),
    "messageGroupField": ("message_group_field", str),
    "visibilityTimeout": ("visibility_timeout_ms", int),
    "visibility_timeout_ms": ("visibility_timeout_ms", int),
    "delaySeconds": ("delay_ms", int),
}


def policy_problem(config: Any, where: str) -> str | None:
    """What is wrong with a queue config table, or None."""
    if not isinstance(config, dict):
        return f"{where} must be an object"
    for key, value in config.items():
        known = CONFIG_KEYS.get(key)
        if known is None:
            return f"{where}.{key} is not a queue setting (known: " \
                   f"{', '.join(sorted(CONFIG_KEYS))})"
        name, kind = known
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{where}.{key} must be {'a whole number' if kind is int else 'a string'}"
        # The same ranges and choices as the config file's [queues.NAME] keys.
        if isinstance(value, int):
            low, high = QUEUE_RANGES.get(name, (0, 2**31 - 1))
            if not low <= value <= high:
                return f"{where}.{key} must be from {low} to {high}, got {value}"
        elif name in QUEUE_CHOICES and value not in QUEUE_CHOICES[name]:
            return f"{where}.{key} must be {' or '.join(QUEUE_CHOICES[name])}, got {value!r}"
    return None


def make_policy(base: QueuePolicy, config: dict[str, Any] | None) -> QueuePolicy:
    """``base`` with a (validated) config table's settings."""
    if not config:
        return base
    changes: dict[str, Any] = {}
    for key, value in config.items():
        name, _ = CONFIG_KEYS[key]
        if key == "delaySeconds":
            value *= 1000
        elif key == "visibilityTimeout":
            value *= 1000  # upstream gives seconds
        changes[name] = value
    return replace(base, **changes)


class QueueHost(Protocol):
    """What the queues need from the core."""

    @property
    def clock(self) -> Clock: ...

    def serves(self, function_id: str) -> bool: ...

    def queue_consumer(self, topic: str) -> Binding | None: ...

    def binding(self, trigger_id: str) -> Binding | None: ...

    def record(self, kind: str, out: Output, **fields: Any) -> None: ...

    def call_internal(self, function_id: str, data: Any, then: Any, clock: Clock,
                      out: Output, timeout_ms: int | None = None, source: str = "daemon",
                      tags: dict[str, Any] | None = None) -> None: ...


@dataclass(slots=True, eq=False)
class Message:
    id: str
    queue: str
    function_id: str
    data: bytes
    attempts: int
    available_at: float
    enqueued_at: float
    group: str | None
    trigger_id: str | None
    last_error: Any = None
    dead: bool = False
    #: The message's entry in a shared backend's stream (core/shared_queues.py), or "".
    entry: str = ""

    def row(self) -> PutMessage:
        return PutMessage(self.id, self.queue, self.function_id, self.data, self.attempts,
                          self.available_at, self.enqueued_at, self.group, self.last_error,
                          self.dead, self.trigger_id)


@dataclass(slots=True, eq=False)
class Lane:
    """One queue's messages for one function."""

    queue: str
    function_id: str
    policy: QueuePolicy
    #: Deliverable now, oldest first.
    ready: collections.deque[Message] = field(default_factory=collections.deque)
    #: ``(available_at, order, message)``: waiting for a retry or a delay.
    delayed: list[tuple[float, int, Message]] = field(default_factory=list)
    in_flight: dict[str, Message] = field(default_factory=dict)
    #: FIFO groups with a message in flight or waiting for its retry.
    busy_groups: set[str] = field(default_factory=set)
    delivered: int = 0
    #: The queue_config the policy was last made from (topic lanes).
    override: dict[str, Any] | None = None


class QueueBook:
    """The queues' messages by lane, and what can be read of them (``engine::queues::list``,
    the dead letters, the counts of ``engine::status``); :class:`Queues` delivers them."""

    def __init__(self, host: QueueHost, config: dict[str, dict[str, Any]] | None = None
                 ) -> None:
        self.host = host
        #: ``[queues.NAME]`` tables from the config file (validated by the daemon).
        self._config = config or {}
        self.lanes: dict[tuple[str, str], Lane] = {}
        #: Dead letters by queue, in the order they died.
        self.dead: dict[str, dict[str, Message]] = collections.defaultdict(dict)

    def policy(self, queue: str, override: dict[str, Any] | None = None) -> QueuePolicy:
        base = make_policy(QueuePolicy(), self._config.get(queue))
        return make_policy(base, override)

    def _lane(self, queue: str, function_id: str) -> Lane:
        lane = self.lanes.get((queue, function_id))
        if lane is None:
            lane = self.lanes[(queue, function_id)] = Lane(queue, function_id,
                                                           self.policy(queue))
        return lane

    def served(self, function_id: str) -> bool:
        """Someone serves ``function_id`` (here; or, shared, on any daemon)."""
        return self.host.serves(function_id)

    def describe(self) -> list[dict[str, Any]]:
        """One row per queue and function, with counts, sorted."""
        rows = []
        keys = set(self.lanes) | {(m.queue, m.function_id) for letters in self.dead.values()
                                  for m in letters.values()}
        for queue, function_id in sorted(keys):
            lane = self.lanes.get((queue, function_id))
            if function_id == NO_CONSUMER and lane is not None and not (
                    lane.ready or lane.delayed):
                continue  # a consumer took what waited: nothing to show
            dead = sum(1 for m in self.dead.get(queue, {}).values()
                       if m.function_id == function_id)
            served = self.host.serves(function_id)
            ready = len(lane.ready) if lane else 0
            rows.append({
                "queue": queue,
                # None: topic messages no queue trigger consumes yet (they wait).
                "function_id": None if function_id == NO_CONSUMER else function_id,
                "ready": ready if served else 0,
                "waiting_for_function": 0 if served else ready,
                "delayed": len(lane.delayed) if lane else 0,
                "in_flight": len(lane.in_flight) if lane else 0,
                "dead_letters": dead,
                "delivered": lane.delivered if lane else 0,
                "type": (lane.policy if lane else self.policy(queue)).type,
            })
        return rows

    def left(self, queue: str) -> tuple[int, int]:
        """``(dead letters, waiting or delayed messages)`` of ``queue`` (not in flight)."""
        waiting = sum(len(lane.ready) + len(lane.delayed)
                      for (name, _), lane in self.lanes.items() if name == queue)
        return len(self.dead.get(queue, {})), waiting

    def dead_letters(self, queue: str) -> list[dict[str, Any]]:
        return [{"id": m.id, "queue": m.queue, "function_id": m.function_id,
                 "payload": p.from_raw(Raw(m.data)), "attempts": m.attempts,
                 "last_error": m.last_error, "enqueued_at": round(m.enqueued_at, 3),
                 "failed_at": round(m.available_at, 3)}
                for m in self.dead.get(queue, {}).values()]

    def dead_count(self) -> int:
        """Dead letters, in every queue."""
        return sum(len(letters) for letters in self.dead.values())

    def count(self) -> int:
        """Messages kept: waiting, in flight and dead."""
        return sum(len(lane.ready) + len(lane.delayed) + len(lane.in_flight)
                   for lane in self.lanes.values()) + self.dead_count()


class Queues(QueueBook):
    """Delivery: messages in, through their lanes to their functions, retried, dead."""

    def __init__(self, host: QueueHost, config: dict[str, dict[str, Any]] | None = None,
                 default_timeout_ms: int | None = None) -> None:
        super().__init__(host, config)
        self._default_timeout_ms = default_timeout_ms
        #: Lanes that may have something to deliver, in the order they became so (a
        #: pump cut short by its limit goes on where it stopped: no lane starves).
        self.dirty: dict[tuple[str, str], None] = {}
        #: ``(available_at, order, lane)`` of every delayed message, earliest first
        #: (entries of messages that left their lane's heap are skipped when met).
        self._due: list[tuple[float, int, Lane]] = []
        self._order = itertools.count()
        #: Deliveries acknowledged since the last pump (a success always marks its lane
        #: dirty, so a pump follows and writes them).
        self._acks: list[Message] = []
        # Receipt ids: UUID-shaped, unique across restarts (a random prefix per start),
        # for the price of a counter.
        self._id_prefix = str(uuid.uuid4())[:24]
        self._ids = itertools.count(1)

    # --- in -------------------------------------------------------------------------------

    def load(self, rows: Iterable[PutMessage]) -> None:
        """Messages the store held at start-up: each waits for delivery again."""
        for row in rows:
            message = Message(row.id, row.queue, row.function_id, row.data, row.attempts,
                              row.available_at, row.enqueued_at, row.group, row.trigger_id,
                              row.last_error, row.dead)
            if message.dead:
                self.dead[message.queue][message.id] = message
            else:
                self._place(self._lane(message.queue, message.function_id), message)

    def enqueue(self, queue: str, function_id: str, data: Raw, out: Output,
                then: AfterCommit, *, delay_ms: int = 0, trigger_id: str | None = None,
                override: dict[str, Any] | None = None) -> Message:
        """Keep a message; ``then(failure, out)`` runs once it is durable (or not), and
        only then may it be delivered."""
        lane = self._lane_with(queue, function_id, override)
        policy = lane.policy
        wall = self.host.clock.wall
        raw = bytes(data)
        message = Message(f"{self._id_prefix}{next(self._ids):012x}", queue, function_id,
                          raw, 0, wall + (delay_ms + policy.delay_ms) / 1000, wall,
                          group_in(policy, raw), trigger_id)

        def landed(failure: str | None, out: Output) -> None:
            if failure is None:
                self._place(lane, message)
                if function_id == NO_CONSUMER:  # a consumer may have bound meanwhile
                    self.adopt(queue, out)
            then(failure, out)

        out.append((EVENTS, Persist((message.row(),), landed)))
        return message

    def _lane_with(self, queue: str, function_id: str,
                   override: dict[str, Any] | None) -> Lane:
        """The lane, its policy made from a queue trigger's own ``queue_config``."""
        lane = self.lanes.get((queue, function_id)) or self._lane(queue, function_id)
        if override is not lane.override:
            lane.policy, lane.override = self.policy(queue, override), override
        return lane

    def adopt(self, topic: str, out: Output) -> int:
        """Topic messages that waited for a consumer go to the first ``queue`` trigger
        now bound to ``topic`` (each later one gets what is enqueued after it bound);
        return how many."""
        waiting = self.lanes.get((topic, NO_CONSUMER))
        if waiting is None or not (waiting.ready or waiting.delayed):
            return 0
        consumer = self.host.queue_consumer(topic)
        if consumer is None:
            return 0
        lane = self._lane_with(topic, consumer.function_id,
                               consumer.config.get("queue_config"))
        messages = [*waiting.ready, *(entry[2] for entry in sorted(waiting.delayed))]
        waiting.ready.clear()
        waiting.delayed.clear()  # their entries in _due are stale now, and skipped
        for message in messages:
            message.function_id, message.trigger_id = consumer.function_id, consumer.id
            message.group = group_in(lane.policy, message.data)
            self._place(lane, message)
        # The store learns whose they are now, so a restart keeps that.
        out.append((EVENTS, Persist(tuple(m.row() for m in messages), _nothing)))
        return len(messages)

    def _place(self, lane: Lane, message: Message) -> None:
        """Put a message where it waits: ready, or delayed until its time."""
        if message.available_at > self.host.clock.wall:
            order = next(self._order)
            heapq.heappush(lane.delayed, (message.available_at, order, message))
            heapq.heappush(self._due, (message.available_at, order, lane))
            if message.group is not None and message.attempts:
                lane.busy_groups.add(message.group)  # a retry holds its group's order
        else:
            lane.ready.append(message)
        self.dirty[(lane.queue, lane.function_id)] = None

    # --- out ------------------------------------------------------------------------------

    def function_added(self, function_id: str) -> None:
        """A worker now serves ``function_id``: its waiting messages may go."""
        for key in self.lanes:
            if key[1] == function_id:
                self.dirty[key] = None

    def next_due(self) -> float | None:
        """The earliest wall time a delayed message becomes deliverable."""
        due = self._due
        # Entries whose message left its lane's heap (delivered, purged) are stale.
        while due and not (due[0][2].delayed and due[0][2].delayed[0][1] == due[0][1]):
            heapq.heappop(due)
        return due[0][0] if due else None

    def release_due(self) -> None:
        """Delayed messages whose time came join their lanes' ready ones."""
        due = self._due
        wall = self.host.clock.wall
        while due and due[0][0] <= wall:
            _, order, lane = heapq.heappop(due)
            if not lane.delayed or lane.delayed[0][1] != order:
                continue  # stale: that message left the heap already
            _, _, message = heapq.heappop(lane.delayed)
            if message.group is not None and message.attempts:
                lane.busy_groups.discard(message.group)
                lane.ready.appendleft(message)  # a retry goes before its group's later
            else:
                lane.ready.append(message)
            self.dirty[(lane.queue, lane.function_id)] = None

    def pump(self, out: Output, limit: int | None = None) -> None:
        """Deliver what may go now: due delayed messages join the ready ones, and each
        lane fills its concurrency from them, ``limit`` deliveries at most (None: no
        limit). Lanes the limit cut short stay dirty, at the back."""
        clock = self.host.clock
        self.release_due()
        dirty, self.dirty = self.dirty, {}
        left = limit
        cut_short = None
        for key in dirty:
            if left is not None and left <= 0:
                self.dirty[key] = None  # for the next pump, in the same order
                continue
            found = self.lanes.get(key)
            if found is not None and found.ready and self.host.serves(found.function_id):
                sent = self._fill(found, clock, out, left)
                if left is not None:
                    left -= sent
                    if left <= 0 and found.ready:
                        cut_short = key
        if cut_short is not None:  # maybe more to send: after the lanes not reached
            self.dirty[cut_short] = None
        if self._acks:  # the acknowledgements of this turn, as one write
            acks, self._acks = self._acks, []
            self._write_acks(acks, out)

    def tick(self, out: Output) -> None:
        """The clock moved (the router's ``expire``): nothing to do here; a shared
        backend's queues keep in touch with it (core/shared_queues.py)."""

    def _write_acks(self, acks: list[Message], out: Output) -> None:
        """Delivered messages are done with."""
        out.append((EVENTS, Persist(tuple(DropMessage(m.id) for m in acks), _nothing)))

    def _write_again(self, message: Message, out: Output) -> None:
        """A message failed: keep its attempts and error (and whether it is dead now)."""
        out.append((EVENTS, Persist((message.row(),), _nothing)))

    def _unserved(self, lane: Lane, message: Message, out: Output) -> None:
        """Nobody serves the message's function (any more): it waits, first in line."""
        lane.ready.appendleft(message)

    def _fill(self, lane: Lane, clock: Clock, out: Output, limit: int | None) -> int:
        """Deliver from the lane's ready messages up to its concurrency (and ``limit``);
        return how many went."""
        policy = lane.policy
        skipped: list[Message] = []
        serves = self.host.serves
        sent = 0
        while lane.ready and len(lane.in_flight) < policy.concurrency \
                and (limit is None or sent < limit) \
                and serves(lane.function_id):  # a delivery may find it gone
            message = lane.ready.popleft()
            if message.group is not None and message.group in lane.busy_groups:
                skipped.append(message)  # its group has one in flight: keep the order
                continue
            if message.group is not None:
                lane.busy_groups.add(message.group)
            lane.in_flight[message.id] = message
            self._deliver(lane, message, clock, out)
            sent += 1
        lane.ready.extendleft(reversed(skipped))
        return sent

    def _deliver(self, lane: Lane, message: Message, clock: Clock, out: Output) -> None:
        timeout_ms = lane.policy.visibility_timeout_ms or self._default_timeout_ms
        data = Raw(message.data)
        binding = self.host.binding(message.trigger_id) if message.trigger_id else None
        condition = binding.config.get("condition_function_id") if binding else None
        # The router records each invocation with these (success and failure alike).
        source = f"queue:{lane.queue}"
        tags = {"message_id": message.id, "attempt": message.attempts + 1}

        def done(result: Any, error: p.ErrorBody | None, out: Output) -> None:
            self._finished(lane, message, error, out)

        if condition is None:
            self.host.call_internal(lane.function_id, data, done, clock, out, timeout_ms,
                                    source, tags)
            return

        def decide(result: Any, error: p.ErrorBody | None, out: Output) -> None:
            if error is not None:  # an attempt, even when the condition is missing
                self._finished(lane, message, p.ErrorBody(
                    code=error.code, message=f"condition '{condition}' failed: "
                                             f"{error.message}"), out, waits=False)
            elif not _truthy(result):
                self.host.record("trigger.skipped", out, trigger_id=message.trigger_id,
                                 trigger_type="queue", function_id=lane.function_id,
                                 reason=f"condition '{condition}' returned "
                                        f"{bytes(result or p.NULL).decode()}")
                self._finished(lane, message, None, out)
            else:
                self.host.call_internal(lane.function_id, data, done, self.host.clock, out,
                                        timeout_ms, source, tags)

        self.host.call_internal(condition, data, decide, clock, out, timeout_ms, source,
                                {"condition_of": message.trigger_id})

    def _finished(self, lane: Lane, message: Message, error: p.ErrorBody | None,
                  out: Output, waits: bool = True) -> None:
        if lane.in_flight.pop(message.id, None) is None:
            return  # purged meanwhile
        self.dirty[(lane.queue, lane.function_id)] = None
        if error is None:
            lane.delivered += 1
            if message.group is not None:
                lane.busy_groups.discard(message.group)
            self._acks.append(message)  # written together by pump()
            return
        if waits and error.code == "function_not_found":  # nobody serves it: it waits
            if message.group is not None:
                lane.busy_groups.discard(message.group)
            self._unserved(lane, message, out)
            return
        clock = self.host.clock
        message.attempts += 1
        message.last_error = {"code": error.code, "message": error.message}
        if message.attempts > lane.policy.max_retries:
            message.dead, message.available_at = True, clock.wall
            if message.group is not None:
                lane.busy_groups.discard(message.group)
            self.dead[lane.queue][message.id] = message
            self.host.record("queue.dead_letter", out, queue=lane.queue,
                             function_id=lane.function_id, message_id=message.id,
                             attempts=message.attempts, error=message.last_error)
        else:
            message.available_at = clock.wall + lane.policy.retry_delay_s(message.attempts)
            self.host.record("queue.retry", out, queue=lane.queue,
                             function_id=lane.function_id, message_id=message.id,
                             attempt=message.attempts, at=round(message.available_at, 3))
            self._place(lane, message)
        self._write_again(message, out)

    # --- operating them -------------------------------------------------------------------

    def redrive(self, queue: str, message_id: str | None, out: Output,
                limit: int | None = None) -> int:
        """Dead letters of ``queue`` (one, or all, or the oldest ``limit``) go back for
        delivery, attempts reset."""
        letters = self.dead.get(queue, {})
        chosen = [letters[message_id]] if message_id in letters else \
            [] if message_id is not None else list(itertools.islice(letters.values(), limit))
        wall = self.host.clock.wall
        for message in chosen:
            del letters[message.id]
            message.dead, message.attempts, message.available_at = False, 0, wall
            self._place(self._lane(queue, message.function_id), message)
            out.append((EVENTS, Persist((message.row(),), _nothing)))
        return len(chosen)

    def purge(self, queue: str, out: Output, limit: int | None = None) -> int:
        """Drop every message of ``queue`` that is not in flight, dead letters too (or
        ``limit`` of them: dead letters first, then waiting, then delayed)."""
        left = limit if limit is not None else sys.maxsize
        letters = self.dead.get(queue, {})
        dropped: list[Message] = list(itertools.islice(letters.values(), left))
        for message in dropped:
            del letters[message.id]
        if not letters:
            self.dead.pop(queue, None)
        for (name, _), lane in self.lanes.items():
            if name != queue or len(dropped) >= left:
                continue
            while lane.ready and len(dropped) < left:
                dropped.append(lane.ready.popleft())
            while lane.delayed and len(dropped) < left:
                dropped.append(heapq.heappop(lane.delayed)[2])
            if not lane.ready and not lane.delayed:
                lane.busy_groups.clear()
        if dropped:
            out.append((EVENTS, Persist(tuple(DropMessage(m.id) for m in dropped),
                                        _nothing)))
        return len(dropped)


def _nothing(failure: str | None, out: Output) -> None:
    """After a write nobody waits for (an ack, a retry's new time): a failure is logged
    by the store writer; the message is delivered again after a restart (at least once)."""


def _truthy(result: Any) -> bool:
    from iii_daemon.core.triggers.manager import is_truthy

    return is_truthy(p.from_raw(result or p.NULL))


def group_in(policy: QueuePolicy, data: bytes) -> str | None:
    """A message's group under ``policy``: None unless the queue is fifo."""
    return _group_of(data, policy.message_group_field) if policy.type == "fifo" else None


def _group_of(data: bytes, group_field: str | None) -> str:
    """A fifo message's group: the payload's ``group_field`` (as text), else one group."""
    if group_field:
        payload = p.from_raw(Raw(data))
        if isinstance(payload, dict) and group_field in payload:
            return str(payload[group_field])
    return ""

