"""``queue``: a durable subscription to a topic, as the upstream engine shapes it.

``enqueue {topic, data}`` keeps one message per function bound to the topic (each gets
its own copy, in the queue named after the topic, delivered with retries; see
:mod:`iii_daemon.core.queues`). The binding's ``queue_config`` (upstream keys: maxRetries,
backoffDelayMs, backoffType, concurrency, visibilityTimeout, delaySeconds, type)
overrides ``[queues.TOPIC]``. The type itself fires nothing: the queue delivers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iii_daemon.core.queues import policy_problem
from iii_daemon.core.triggers.base import ACTIVE, Binding, Clock, require_string

if TYPE_CHECKING:
    from iii_daemon.core.effects import Output


class QueueType:
    id: str = "queue"
    description: str = "delivers each `enqueue` on a topic durably, with retries"
    owner: int | None = None
    max_running: int = 1000

    def __init__(self) -> None:
        self._by_topic: dict[str, dict[str, Binding]] = {}
        #: ``(topic, out)`` once a binding is bound: the queues hand it the messages
        #: that waited for a consumer of the topic (set by the router).
        self.on_bound: Callable[[str, Output], object] | None = None

    def validate(self, config: dict[str, Any], clock: Clock) -> str | None:
        problem = require_string(config, "topic")
        if problem is None and config.get("queue_config") is not None:
            problem = policy_problem(config["queue_config"], "config.queue_config")
        return problem

    def bind(self, binding: Binding, clock: Clock, out: Output) -> str:
        self._by_topic.setdefault(binding.config["topic"], {})[binding.id] = binding
        if self.on_bound is not None:
            self.on_bound(binding.config["topic"], out)
        return ACTIVE

    def unbind(self, binding: Binding, out: Output) -> None:
        self._by_topic.get(binding.config["topic"], {}).pop(binding.id, None)

    def consumer(self, topic: str) -> Binding | None:
        """The first binding on ``topic`` (it takes messages that waited for one)."""
        return next(iter(self._by_topic.get(topic, {}).values()), None)

    def bindings(self) -> list[Binding]:
        """Every ``queue`` binding, on every topic."""
        return [b for by_id in self._by_topic.values() for b in by_id.values()]

    def subscribers(self, topic: str) -> list[Binding]:
        """The bindings on ``topic``, one per function (the first one bound wins)."""
        by_function: dict[str, Binding] = {}
        for binding in self._by_topic.get(topic, {}).values():
            by_function.setdefault(binding.function_id, binding)
        return list(by_function.values())
