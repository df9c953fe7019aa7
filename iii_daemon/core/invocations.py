"""Calls routed to a worker and not answered yet, with their deadlines."""

from __future__ import annotations

import collections
import heapq
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

#: What the daemon does with the answer to a call it made itself: ``(result, error, out)``
#: with ``error`` an ``ErrorBody`` or None.
Continuation = Callable[[Any, Any, Any], None]


class Invocation(msgspec.Struct, eq=False):
    """One routed call (a struct: made for every call, it costs a fifth of a dataclass
    with these many fields to build)."""

    #: The id the daemon chose and sent to the serving worker.
    id: str
    function_id: str
    #: Connection serving the call.
    worker: int
    #: Connection waiting for the answer, or None when nobody is (void calls).
    caller: int | None
    #: The caller's own invocation id, used in the answer.
    caller_invocation_id: str | None
    started: float
    timeout_ms: int | None = None
    deadline: float | None = None
    #: For the daemon's own calls (trigger targets, conditions): what to do with the answer.
    then: Continuation | None = None
    #: For its event: who called (cli, sdk, trigger:TYPE, queue:NAME), how (sync, void),
    #: the serving worker's id, the start of the payload, and fields of the caller's.
    source: str = ""
    action: str = "sync"
    worker_id: str = ""
    payload: bytes = b""
    tags: dict[str, Any] | None = None
    #: What observers need of the call (an ``observers.Observed``), when it has any.
    observed: Any = None


class InvocationTable:
    """Pending invocations by daemon id, with their deadlines.

    Calls with the same ``timeout_ms`` end in the order they started (the clock only goes
    forward), so each such lane is a FIFO whose entries cost an append and a pop: the
    daemon's default timeout, and the one a client sends with every call (the CLI does).
    A deadline out of its lane's order, or beyond ``MAX_LANES`` timeouts in use at once,
    sits in a heap. Both delete lazily.
    """

    # Rebuild the heap when dead entries outnumber live ones by this factor, so a
    # high call rate with long timeouts does not keep every finished call's entry.
    _COMPACT_FACTOR = 2
    _COMPACT_MIN = 1024
    #: Timeouts with a lane of their own at once; a lane goes when it empties, so a
    #: client sending a new timeout each call only sends its calls to the heap.
    MAX_LANES = 8

    def __init__(self) -> None:
        self._pending: dict[str, Invocation] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._lanes: dict[int | None, collections.deque[tuple[float, str]]] = {}
        # Ids look like UUIDs (SDKs may expect that) but cost a counter increment:
        # a random prefix per daemon run and a 48-bit sequence.
        self._prefix = str(uuid.uuid4())[:24]
        self._seq = 0

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, invocation_id: str) -> bool:
        return invocation_id in self._pending

    def new_id(self) -> str:
        self._seq += 1
        return f"{self._prefix}{self._seq:012x}"

    def add(self, invocation: Invocation) -> None:
        """Track ``invocation`` until it is popped or its deadline passes."""
        self._pending[invocation.id] = invocation
        deadline = invocation.deadline
        if deadline is None:
            return
        limit = self._COMPACT_MIN + self._COMPACT_FACTOR * len(self._pending)
        lanes = self._lanes
        lane = lanes.get(invocation.timeout_ms)
        if lane is None and len(lanes) < self.MAX_LANES:
            lane = lanes[invocation.timeout_ms] = collections.deque()
        if lane is not None and (not lane or lane[-1][0] <= deadline):
            lane.append((deadline, invocation.id))
            if len(lane) > limit:
                lanes[invocation.timeout_ms] = collections.deque(
                    d for d in lane if d[1] in self._pending)
            return
        heapq.heappush(self._deadlines, (deadline, invocation.id))
        if len(self._deadlines) > limit:
            self._compact()

    def get(self, invocation_id: str) -> Invocation | None:
        return self._pending.get(invocation_id)

    def pop(self, invocation_id: str) -> Invocation | None:
        return self._pending.pop(invocation_id, None)

    def pop_expired(self, now: float) -> list[Invocation]:
        """Remove and return the invocations whose deadline is at or before ``now``,
        earliest first."""
        expired: list[Invocation] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            self._expire(heapq.heappop(heap)[1], now, expired)
        for lane in self._lanes.values():
            while lane and lane[0][0] <= now:
                self._expire(lane.popleft()[1], now, expired)
        if len(self._lanes) > 1 or heap:
            expired.sort(key=lambda invocation: invocation.deadline or 0.0)
        return expired

    def _expire(self, invocation_id: str, now: float, expired: list[Invocation]) -> None:
        invocation = self._pending.get(invocation_id)
        # The entry may be stale: the call was answered (gone) or is another one's.
        if invocation is not None and invocation.deadline is not None \
                and invocation.deadline <= now:
            del self._pending[invocation_id]
            expired.append(invocation)

    def next_deadline(self) -> float | None:
        heap = self._deadlines
        pending = self._pending
        while heap and heap[0][1] not in pending:
            heapq.heappop(heap)
        earliest = heap[0][0] if heap else None
        emptied = False
        for lane in self._lanes.values():
            while lane and lane[0][1] not in pending:
                lane.popleft()
            if not lane:
                emptied = True
            elif earliest is None or lane[0][0] < earliest:
                earliest = lane[0][0]
        if emptied:
            self._lanes = {timeout: lane for timeout, lane in self._lanes.items() if lane}
        return earliest

    def drain(self) -> list[Invocation]:
        """Remove and return every pending invocation (daemon shutdown)."""
        pending = list(self._pending.values())
        self._pending.clear()
        self._deadlines.clear()
        self._lanes.clear()
        return pending

    def _compact(self) -> None:
        self._deadlines = [d for d in self._deadlines if d[1] in self._pending]
        heapq.heapify(self._deadlines)
