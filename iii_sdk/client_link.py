"""The client side of one daemon connection: NDJSON over a stream transport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from iii_sdk import protocol as p
from iii_sdk.errors import FrameTooLarge, ProtocolError
from iii_sdk.framing import LineReader

log = logging.getLogger("iii_sdk")


class ClientLink(asyncio.Protocol):
    """Decodes incoming frames into messages for ``on_message``; ``send`` writes one."""

    def __init__(self, on_message: Callable[[p.Message], None], on_lost: Callable[[], None],
                 max_frame_bytes: int) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._reader = LineReader(max_frame_bytes)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except FrameTooLarge as exc:
            log.error("closing the connection: %s", exc)
            self.close()
            return
        for frame in frames:
            try:
                message = p.decode(frame)
            except ProtocolError as exc:
                log.warning("ignoring a frame the SDK does not understand: %s", exc)
                continue
            self._on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._on_lost()

    def send(self, message: p.Message) -> None:
        if self._transport is not None:
            self._transport.write(p.encode(message))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
