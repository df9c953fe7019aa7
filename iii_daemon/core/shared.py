"""What the core asks of a shared backend (Redis, when several daemons share pub/sub),
and how the answers come back: an operation goes out as a :class:`SharedOp` effect,
the driver runs it and hands the outcome to ``Router.shared_done``, which runs what
waited for it. Pure: the core never waits, it continues when told.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iii_daemon.core.effects import EVENTS, SharedOp

if TYPE_CHECKING:
    from iii_daemon.core.effects import Output

#: What runs once an operation is done: ``(result, error, out)``; ``error`` a message.
Then = Callable[[Any, "str | None", "Output"], None]


class SharedOps:
    """Operations sent to the shared backend and not answered yet."""

    def __init__(self, describe: str) -> None:
        #: The backend as people may see it (its URL without a password).
        self.describe = describe
        self._waiting: dict[int, Then] = {}
        self._next = 0

    def request(self, kind: str, args: dict[str, Any], then: Then, out: Output) -> None:
        self._next += 1
        self._waiting[self._next] = then
        out.append((EVENTS, SharedOp(self._next, kind, args)))

    def done(self, op_id: int, result: Any, error: str | None, out: Output) -> None:
        then = self._waiting.pop(op_id, None)
        if then is not None:
            then(result, error, out)

    def __len__(self) -> int:
        return len(self._waiting)
