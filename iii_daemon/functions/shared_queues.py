"""``engine::queues::*`` when several daemons share a backend (Redis): each answer is
read from (or made by) the backend, so every daemon gives the same one. The shapes are
those of the embedded queues (``functions/queue.py``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from msgspec import json as msgspec_json

from iii_daemon.core.queues import NO_CONSUMER
from iii_daemon.core.shared_queues import listed as _listed
from iii_daemon.core.shared_queues import split_lane
from iii_daemon.functions.shared_state import ask

if TYPE_CHECKING:
    from iii_daemon.core.builtin import Later, Services
    from iii_daemon.core.shared import SharedOps


def list_queues(services: Services, shared: SharedOps) -> Later:
    """One row per queue and function in the backend, with counts across the daemons:
    ``in_flight`` is what daemons hold (delivering, or waiting for a retry)."""
    local = services.registry.functions

    def rows(found: dict[str, Any]) -> dict[str, Any]:
        out = []
        serving = set(_listed(found.get("serving")))
        for lane, ready, held, delayed, dead, delivered in _listed(found.get("rows")):
            queue, function_id = split_lane(lane)
            if function_id == NO_CONSUMER and not (ready or delayed):
                continue  # a consumer took what waited: nothing to show
            served = function_id in serving or function_id in local
            out.append({
                "queue": queue, "function_id": function_id or None,
                "ready": ready if served else 0,
                "waiting_for_function": 0 if served else ready,
                "delayed": delayed, "in_flight": held, "dead_letters": dead,
                "delivered": delivered, "type": services.queues.policy(queue).type})
        return {"queues": sorted(out, key=lambda r: (r["queue"], r["function_id"] or ""))}

    return ask(shared, "queue_list", {"now_ms": int(time.time() * 1000)}, rows)


def dead_letters(shared: SharedOps, queue: str) -> Later:
    def letters(found: list[tuple[dict[str, bytes], float]]) -> dict[str, Any]:
        return {"queue": queue, "dead_letters": [{
            "id": f["id"].decode(), "queue": queue, "function_id": f["fn"].decode(),
            "payload": msgspec_json.decode(f["data"]), "attempts": int(f["attempts"]),
            "last_error": msgspec_json.decode(f["err"]) if f.get("err") else None,
            "enqueued_at": round(float(f["enq"]), 3), "failed_at": round(failed / 1000, 3),
        } for f, failed in found if "id" in f]}

    return ask(shared, "queue_dlq", {"queue": queue}, letters)


def redrive(shared: SharedOps, queue: str, message_id: str | None,
            limit: int | None) -> Later:
    return ask(shared, "queue_redrive", {"queue": queue, "id": message_id, "limit": limit},
               lambda done: {"redriven": done[0], "left": done[1]})


def purge(shared: SharedOps, queue: str, limit: int | None) -> Later:
    return ask(shared, "queue_purge", {"queue": queue, "limit": limit},
               lambda done: {"purged": done[0], "left": done[1]})
