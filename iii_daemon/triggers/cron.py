"""``cron``: fire on a schedule (UTC); 6 fields seconds first, 7 with year, 5 classic.

Due times sit in one heap; the router asks :meth:`CronType.next_due` when to wake and
calls :meth:`CronType.pop_due`. Each next time comes from the schedule itself, not from
when the previous firing happened, so nothing drifts; ticks missed while the daemon was
down or stalled are not replayed.
"""

from __future__ import annotations

import heapq
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from croniter import croniter
from croniter.croniter import CroniterError

from iii_daemon.triggers.base import ACTIVE, Binding, Clock, require_string

if TYPE_CHECKING:
    from iii_daemon.router import Output


def rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def next_after(expression: str, wall: float) -> float:
    """The first scheduled time strictly after ``wall``."""
    itr = croniter(expression, datetime.fromtimestamp(wall, UTC), second_at_beginning=True)
    due: datetime = itr.get_next(datetime)
    return due.timestamp()


class CronType:
    id: str = "cron"
    description: str = "fires on a cron schedule (UTC, seconds first)"
    owner: int | None = None

    def __init__(self) -> None:
        #: (due monotonic, sequence, binding id, scheduled wall time)
        self._heap: list[tuple[float, int, str, float]] = []
        self._bound: dict[str, Binding] = {}
        self._seq = 0

    def validate(self, config: dict[str, Any]) -> str | None:
        problem = require_string(config, "expression")
        if problem:
            return problem
        try:
            croniter(config["expression"], second_at_beginning=True)
        except (CroniterError, ValueError, KeyError) as exc:
            return f"invalid cron expression {config['expression']!r}: {exc}"
        return None

    def bind(self, binding: Binding, clock: Clock, out: Output) -> str:
        self._bound[binding.id] = binding
        self._schedule(binding, clock, clock.wall)
        return ACTIVE

    def unbind(self, binding: Binding, out: Output) -> None:
        self._bound.pop(binding.id, None)  # its heap entries are skipped when they surface

    def _schedule(self, binding: Binding, clock: Clock, after_wall: float) -> None:
        due_wall = next_after(binding.config["expression"], after_wall)
        self._seq += 1
        heapq.heappush(self._heap, (clock.now + (due_wall - clock.wall), self._seq,
                                    binding.id, due_wall))

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2] not in self._bound:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, clock: Clock) -> list[tuple[Binding, dict[str, Any]]]:
        """The bindings due now with their payloads; each is scheduled again."""
        fired: list[tuple[Binding, dict[str, Any]]] = []
        heap = self._heap
        while heap and heap[0][0] <= clock.now:
            _, _seq, binding_id, scheduled = heapq.heappop(heap)
            binding = self._bound.get(binding_id)
            if binding is None:
                continue
            fired.append((binding, {"trigger": "cron", "job_id": binding.id,
                                    "scheduled_time": rfc3339(scheduled),
                                    "actual_time": rfc3339(clock.wall)}))
            # From the later of the schedule and now: a stall skips ticks, never bunches them.
            self._schedule(binding, clock, max(scheduled, clock.wall))
        return fired
