"""Per-function call statistics, kept by the core for every routed invocation.

Each function gets, lazily on its first call: counts (calls, errors), a histogram of
durations on a log scale (each bucket ~19 % wider than the one before, from 10 µs to
about 12 hours) from which p50/p95/p99 are read to within one bucket, and the calls of
each of the last 60 seconds (the rate and a sparkline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from iii_daemon.core.event_log import error_of

#: The smallest duration told apart (ms); shorter ones share the first bucket.
FLOOR_MS = 0.01
#: Each bucket is this much wider than the one before (2 ** 0.25).
GROWTH = 2 ** 0.25
BUCKETS = 128
_LOG_GROWTH = math.log(GROWTH)
WINDOW_S = 60


def bucket_of(duration_ms: float) -> int:
    if duration_ms <= FLOOR_MS:
        return 0
    return min(BUCKETS - 1, int(math.log(duration_ms / FLOOR_MS) / _LOG_GROWTH) + 1)


def upper_bound_ms(bucket: int) -> float:
    """The longest duration that falls into ``bucket``."""
    return FLOOR_MS * GROWTH ** bucket


@dataclass(slots=True, eq=False)
class FunctionStats:
    calls: int = 0
    errors: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    #: Calls per second over the last WINDOW_S seconds: slot -> (second, count).
    seconds: list[int] = field(default_factory=lambda: [0] * WINDOW_S)
    counts: list[int] = field(default_factory=lambda: [0] * WINDOW_S)
    #: The last failure as it came (made into {code, message} when described).
    last_error: Any = None

    def add(self, duration_ms: float, failed: bool, now: float, count: int = 1) -> None:
        """``count`` calls of ``duration_ms`` each, all failed or none."""
        self.calls += count
        if failed:
            self.errors += count
        self.histogram[bucket_of(duration_ms)] += count
        second = int(now)
        slot = second % WINDOW_S
        if self.seconds[slot] != second:
            self.seconds[slot], self.counts[slot] = second, 0
        self.counts[slot] += count

    def percentile_ms(self, fraction: float) -> float | None:
        if not self.calls:
            return None
        wanted = max(1, math.ceil(self.calls * fraction))
        seen = 0
        for bucket, count in enumerate(self.histogram):
            seen += count
            if seen >= wanted:
                return round(upper_bound_ms(bucket), 3)
        return None  # unreachable: the counts add up to calls

    def per_second(self, now: float) -> list[int]:
        """Calls in each of the last WINDOW_S whole seconds, oldest first (the current,
        unfinished second last)."""
        second = int(now)
        return [self.counts[s % WINDOW_S] if self.seconds[s % WINDOW_S] == s else 0
                for s in range(second - WINDOW_S + 1, second + 1)]

    def describe(self, function_id: str, now: float) -> dict[str, Any]:
        recent = self.per_second(now)
        return {"function_id": function_id, "calls": self.calls, "errors": self.errors,
                "p50_ms": self.percentile_ms(0.50), "p95_ms": self.percentile_ms(0.95),
                "p99_ms": self.percentile_ms(0.99), "calls_last_minute": sum(recent),
                "rate_per_s": round(sum(recent[:-1]) / (WINDOW_S - 1), 3),
                "per_second": recent, "last_error": error_of(self.last_error)}


class Stats:
    """Statistics of every function that was called, by id."""

    def __init__(self) -> None:
        self.functions: dict[str, FunctionStats] = {}

    def add(self, function_id: str, duration_ms: float, error: Any, now: float) -> None:
        """One call; ``error`` (an ErrorBody or a worker's error dict) when it failed."""
        stats = self.functions.get(function_id)
        if stats is None:
            stats = self.functions[function_id] = FunctionStats()
        stats.add(duration_ms, error is not None, now)
        if error is not None:
            stats.last_error = error

    def add_local(self, function_id: str, count: int, errors: int, duration_ms_sum: float,
                  now: float) -> None:
        """Calls a worker ran in-process (local dispatch), as it reported them: counted
        with the others, each at their mean duration."""
        stats = self.functions.get(function_id)
        if stats is None:
            stats = self.functions[function_id] = FunctionStats()
        mean = duration_ms_sum / count
        stats.add(mean, False, now, count - errors)
        stats.add(mean, True, now, errors)

    def describe(self, now: float) -> list[dict[str, Any]]:
        return [stats.describe(function_id, now)
                for function_id, stats in sorted(self.functions.items())]
