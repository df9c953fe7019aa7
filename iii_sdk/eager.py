"""Starting a coroutine at once, and making it a task only if it has to wait: what
Python 3.12's eager tasks do, for 3.11 too.

Most handlers finish without waiting for anything (or before their first real wait):
run at once, they cost no task, no loop turn and no done-callback, and their answer
leaves with the others of the same read (see ``ClientLink``).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any

_NOTHING: Any = object()


class _Resumed(Coroutine[Any, Any, Any]):
    """A coroutine that already ran its first step, as a task can drive it on: the
    first ``send`` hands over what that step yielded (the future it waits on)."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def send(self, value: Any) -> Any:
        first = self._first
        if first is not _NOTHING:
            self._first = _NOTHING
            return first
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        first, self._first = self._first, _NOTHING
        if isinstance(first, asyncio.Future):
            first.cancel()  # cancelled before the task took it over: it waits no more
        if val is None and tb is None:
            return self._coro.throw(typ)  # how a task throws: the exception alone
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        raise TypeError("a resumed coroutine is driven by its task only")


def start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
          context: contextvars.Context | None = None) -> asyncio.Task[Any] | None:
    """Run ``coro`` up to its first wait, in ``context`` (a copy of the current one by
    default); None when it finished there, else the task that runs the rest.

    ``coro`` must not raise (wrap it): what it raises in its first step is raised here.
    """
    if context is None:
        context = contextvars.copy_context()
    try:
        first = context.run(coro.send, None)
    except StopIteration:
        return None
    return loop.create_task(_Resumed(coro, first), context=context)
