"""``enqueue`` (the upstream engine's topic publish) and ``engine::queues::*``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iii_daemon.core.builtin import (
    AfterWrites,
    Answer,
    BuiltinFunction,
    CallContext,
    Later,
    field,
)
from iii_daemon.core.errors import CallError
from iii_daemon.core.queues import MAX_DELAY_MS, NO_CONSUMER
from iii_daemon.core.shared_queues import SharedQueues
from iii_daemon.functions import shared_queues
from iii_sdk import protocol as p
from iii_sdk.error_codes import ErrorCode

if TYPE_CHECKING:
    from msgspec import Raw

    from iii_daemon.core.builtin import Services
    from iii_daemon.core.effects import Output
    from iii_daemon.core.triggers.queue import QueueType


def enqueue(services: Services, ctx: CallContext) -> Any:
    """``{topic, data, delay_ms?}``: one durable message per function bound to the topic
    by a ``queue`` trigger; answers null once every copy is on disk."""
    data = ctx.data if isinstance(ctx.data, dict) else {}
    topic = data.get("topic")
    if not isinstance(topic, str) or not topic:
        raise CallError(ErrorCode.TOPIC_NOT_SET, "enqueue needs a non-empty 'topic'")
    delay_ms = data.get("delay_ms") or 0
    if not isinstance(delay_ms, int) or isinstance(delay_ms, bool) or delay_ms < 0:
        raise CallError(ErrorCode.BAD_REQUEST, "delay_ms must be a whole number >= 0")
    if delay_ms > MAX_DELAY_MS:
        raise CallError(ErrorCode.DELAY_TOO_LARGE,
                        f"delay_ms {delay_ms} is more than {MAX_DELAY_MS}")
    kind: QueueType = services.triggers.types["queue"]  # type: ignore[assignment]
    payload = p.to_raw(data.get("data"))
    failures: list[str] = []

    def kept(failure: str | None, out: Output) -> None:
        if failure is not None:
            failures.append(failure)

    queues = services.queues
    if isinstance(queues, SharedQueues):  # the backend knows every daemon's consumers
        return _enqueue_shared(queues, topic, payload, delay_ms)
    subscribers = kind.subscribers(topic)
    if not subscribers:  # it waits under the topic for the first consumer
        queues.enqueue(topic, NO_CONSUMER, payload, ctx.out, kept, delay_ms=delay_ms)
    for binding in subscribers:
        queues.enqueue(topic, binding.function_id, payload, ctx.out, kept,
                       delay_ms=delay_ms, trigger_id=binding.id,
                       override=binding.config.get("queue_config"))

    def answer() -> Any:
        if failures:
            raise CallError(ErrorCode.QUEUE_ERROR, f"not enqueued: {failures[0]}")
        return None

    # The answer waits for the writes just made (AfterWrites runs behind them).
    return AfterWrites(answer)


def _enqueue_shared(queues: SharedQueues, topic: str, payload: Raw, delay_ms: int) -> Later:
    """The topic's message goes to the backend; null once it acknowledged."""

    def start(answer: Answer, out: Output) -> None:
        def kept(failure: str | None, out: Output) -> None:
            answer(None, None if failure is None else p.ErrorBody(
                code=ErrorCode.BACKEND_UNAVAILABLE, message=f"not enqueued: {failure}"), out)

        queues.enqueue_topic(topic, payload, out, kept, delay_ms)

    return Later(start)


def list_queues(services: Services, ctx: CallContext) -> Any:
    if services.shared is not None:
        return shared_queues.list_queues(services, services.shared)
    return {"queues": services.queues.describe()}


def dead_letters(services: Services, ctx: CallContext) -> Any:
    queue = field(ctx.data, "queue", str)
    if services.shared is not None:
        return shared_queues.dead_letters(services.shared, queue)
    return {"queue": queue, "dead_letters": services.queues.dead_letters(queue)}


def _limit(data: Any) -> int | None:
    """``limit``: how many this call handles at most (a CLI goes in steps, showing its
    progress, and the daemon never spends long on one step)."""
    limit = field(data, "limit", int, optional=True)
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise CallError(ErrorCode.BAD_REQUEST, "'limit' must be a whole number from 1")
    return limit


def redrive(services: Services, ctx: CallContext) -> Any:
    """``{queue, id?, limit?}``: answers how many went, and how many dead letters are left."""
    queue = field(ctx.data, "queue", str)
    message_id = field(ctx.data, "id", str, optional=True)
    if services.shared is not None:
        return shared_queues.redrive(services.shared, queue, message_id, _limit(ctx.data))
    redriven = services.queues.redrive(queue, message_id, ctx.out, _limit(ctx.data))
    return {"redriven": redriven, "left": services.queues.left(queue)[0]}


def purge(services: Services, ctx: CallContext) -> Any:
    """``{queue, limit?}``: answers how many went, and how many (dead or waiting) are left."""
    queue = field(ctx.data, "queue", str)
    if services.shared is not None:
        return shared_queues.purge(services.shared, queue, _limit(ctx.data))
    purged = services.queues.purge(queue, ctx.out, _limit(ctx.data))
    return {"purged": purged, "left": sum(services.queues.left(queue))}


FUNCTIONS = (
    BuiltinFunction("enqueue", "keeps {topic, data, delay_ms?} for every queue trigger on "
                               "topic; null once durable", enqueue),
    BuiltinFunction("engine::queues::list", "queues per function: ready, waiting, delayed, "
                                            "in flight, dead letters", list_queues),
    BuiltinFunction("engine::queues::dlq", "the dead letters of {queue}", dead_letters),
    BuiltinFunction("engine::queues::redrive", "sends {queue}'s dead letters (or {id}, or "
                                               "{limit} of them) again", redrive),
    BuiltinFunction("engine::queues::purge", "drops every waiting message and dead letter "
                                             "of {queue} (or {limit} of them)", purge),
)
