"""Ordered WebSocket sending from synchronous code (the daemon's hub, the SDK's loop
callbacks): ``push`` queues a text frame, one task sends them in order."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed


class OrderedSender:
    def __init__(self, conn: Connection,
                 on_drained: Callable[[], None] | None = None) -> None:
        self._conn = conn
        #: Called each time everything queued has been handed to the connection.
        self._on_drained = on_drained
        self._queue: deque[str] = deque()
        #: Characters queued and not yet handed to the connection (back-pressure checks).
        self.queued = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._close_code = 1000

    def push(self, text: str) -> None:
        self._queue.append(text)
        self.queued += len(text)
        self._wakeup.set()

    def discard(self) -> None:
        """Drop everything queued (the connection is being aborted)."""
        self._queue.clear()
        self.queued = 0

    def close(self, code: int = 1000) -> None:
        """Close the connection with ``code`` once everything queued so far is sent."""
        self._closing = True
        self._close_code = code
        self._wakeup.set()

    async def run(self) -> None:
        """Send until closed; returns quietly when the peer is gone (the reader sees it)."""
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue:
                    text = self._queue.popleft()
                    self.queued -= len(text)
                    await self._conn.send(text)
                if self._on_drained is not None:
                    self._on_drained()
                if self._closing:
                    await self._conn.close(self._close_code)
                    return
        except ConnectionClosed:
            return
