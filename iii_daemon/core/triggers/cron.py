"""``cron``: fire on a schedule (UTC); 6 fields seconds first, 7 with year, 5 classic.

Due times sit in one heap; the router asks :meth:`CronType.next_due` when to wake and
calls :meth:`CronType.pop_due`. Each next time comes from the schedule itself, not from
when the previous firing happened, so nothing drifts; ticks missed while the daemon was
down or stalled are not replayed.
"""

from __future__ import annotations

import collections
import functools
import heapq
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from croniter import croniter
from croniter.croniter import CroniterBadDateError

from iii_daemon.core.errors import ScheduleEnded
from iii_daemon.core.triggers.base import ACTIVE, ENDED, ERROR, Binding, Clock, require_string

if TYPE_CHECKING:
    from iii_daemon.core.effects import Output


@functools.lru_cache(maxsize=256)
def rfc3339(wall: float) -> str:
    """``wall`` as RFC 3339 (remembered: the crons that fire together share both their
    scheduled and their actual time)."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")



@functools.lru_cache(maxsize=4096)
def next_after(expression: str, wall: float) -> float:
    """The first scheduled time strictly after ``wall``. Remembered: the crons that fire
    together ask with the same expression (``* * * * * *``, most often) and the same
    time, and croniter takes some 70 us to answer.

    Raises:
        ScheduleEnded: there is none.
        ValueError: the expression is not one croniter reads (CroniterError is one).
    """
    try:
        itr = croniter(expression, datetime.fromtimestamp(wall, UTC), second_at_beginning=True)
        due: datetime = itr.get_next(datetime)
    except CroniterBadDateError:
        raise ScheduleEnded(expression) from None
    except Exception as exc:  # croniter raises more kinds than it documents
        raise ValueError(str(exc) or type(exc).__name__) from None
    return due.timestamp()


def cron_payload(job_id: str, scheduled: float, actual: float) -> dict[str, Any]:
    """What a cron firing's function gets (wall times, RFC 3339)."""
    return {"trigger": "cron", "job_id": job_id, "scheduled_time": rfc3339(scheduled),
            "actual_time": rfc3339(actual)}


#: The fields of a 5, 6 or 7 field expression, in the order the user writes them.
FIELDS = {
    5: ("minute", "hour", "day of month", "month", "day of week"),
    6: ("second", "minute", "hour", "day of month", "month", "day of week"),
    7: ("second", "minute", "hour", "day of month", "month", "day of week", "year"),
}
RANGES = {"second": "0-59", "minute": "0-59", "hour": "0-23", "day of month": "1-31",
          "month": "1-12 or jan-dec", "day of week": "0-6 or sun-sat", "year": "1970-2099"}


def field_problem(expression: str) -> str | None:
    """Which field of ``expression`` croniter refuses, named as the user wrote it (its own
    messages show the fields in its internal order): each field is tried alone."""
    parts = expression.split()
    names = FIELDS.get(len(parts))
    if names is None:
        return (f"it has {len(parts)} fields; a cron expression has 6 (second minute hour "
                f"day-of-month month day-of-week), 5 (no second) or 7 (and a year)")
    for index, (name, part) in enumerate(zip(names, parts, strict=True)):
        alone = ["*"] * len(parts)
        alone[index] = part
        try:
            croniter(" ".join(alone), datetime.fromtimestamp(0, UTC),
                     second_at_beginning=len(parts) > 5)
        except Exception:
            return f"the {name} field {part!r} is not valid ({RANGES[name]})"
    return None


class CronType:
    id: str = "cron"
    description: str = "fires on a cron schedule (UTC, seconds first)"
    owner: int | None = None
    #: A tick that finds the previous firing still running is skipped, not piled up.
    max_running: int = 1

    def __init__(self) -> None:
        #: Bindings due at each scheduled wall time, in the order they were scheduled:
        #: the crons that fire together share one slot (10 000 every-second crons make
        #: one heap entry a second, not 10 000).
        self._slots: dict[float, collections.deque[Binding]] = {}
        #: (due monotonic, scheduled wall time) of each slot.
        self._heap: list[tuple[float, float]] = []
        self._bound: dict[str, Binding] = {}

    def validate(self, config: dict[str, Any], clock: Clock) -> str | None:
        """Refuse what croniter cannot read *and* what it reads but can never schedule:
        the first fire time is computed here, so nothing unschedulable is ever stored."""
        problem = require_string(config, "expression")
        if problem:
            return problem
        expression = config["expression"]
        try:
            next_after(expression, clock.wall)
        except ScheduleEnded:
            return f"cron expression {expression!r} never fires after now"
        except ValueError as exc:
            return f"invalid cron expression {expression!r}: {field_problem(expression) or exc}"
        return None

    def bind(self, binding: Binding, clock: Clock, out: Output) -> str:
        self._bound[binding.id] = binding
        return ACTIVE if self._schedule(binding, clock, clock.wall) else binding.status

    def unbind(self, binding: Binding, out: Output) -> None:
        self._bound.pop(binding.id, None)  # its heap entries are skipped when they surface

    def _schedule(self, binding: Binding, clock: Clock, after_wall: float) -> bool:
        """Queue the next firing; False (binding marked) when there is none."""
        try:
            due_wall = next_after(binding.config["expression"], after_wall)
        except ScheduleEnded:
            binding.status, binding.error = ENDED, "the schedule has no more times"
            self._bound.pop(binding.id, None)
            return False
        except ValueError as exc:  # validated before, so only a stored row gets here
            binding.status, binding.error = ERROR, f"invalid cron expression: {exc}"
            self._bound.pop(binding.id, None)
            return False
        slot = self._slots.get(due_wall)
        if slot is None:
            slot = self._slots[due_wall] = collections.deque()
            heapq.heappush(self._heap, (clock.now + (due_wall - clock.wall), due_wall))
        slot.append(binding)
        return True

    def next_due(self) -> float | None:
        heap, slots = self._heap, self._slots
        while heap and not slots.get(heap[0][1]):  # emptied: its bindings went
            slots.pop(heapq.heappop(heap)[1], None)
        return heap[0][0] if heap else None

    def pop_due(self, clock: Clock, limit: int) -> list[tuple[Binding, Any]]:
        """The bindings due now with their payloads, ``limit`` at most; each is
        scheduled again."""
        fired: list[tuple[Binding, Any]] = []
        heap, slots, bound = self._heap, self._slots, self._bound
        while heap and heap[0][0] <= clock.now and len(fired) < limit:
            scheduled = heap[0][1]
            slot = slots.get(scheduled)
            while slot and len(fired) < limit:
                binding = slot.popleft()
                if bound.get(binding.id) is not binding:
                    continue  # unbound (or bound anew) since it was scheduled
                fired.append((binding, cron_payload(binding.id, scheduled, clock.wall)))
                # From the later of the schedule and now: a stall skips ticks, never
                # bunches them.
                self._schedule(binding, clock, max(scheduled, clock.wall))
            if not slot:
                heapq.heappop(heap)
                slots.pop(scheduled, None)
        return fired
