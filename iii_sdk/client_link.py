"""The client side of one daemon connection: NDJSON over a stream transport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from websockets.exceptions import ConnectionClosed

from iii_sdk import protocol as p
from iii_sdk.errors import FrameTooLarge, ProtocolError
from iii_sdk.framing import LineReader
from iii_sdk.ws_sender import OrderedSender

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

log = logging.getLogger("iii_sdk")


def _deliver(frame: bytes, on_message: Callable[[p.Message], None]) -> None:
    """Decode one frame and hand it on; a frame we do not understand is skipped, not fatal."""
    try:
        message = p.decode(frame)
    except ProtocolError as exc:
        log.warning("ignoring a frame the SDK does not understand: %s", exc)
        return
    on_message(message)


class ClientLink(asyncio.Protocol):
    """Decodes incoming frames into messages for ``on_message``; ``send`` writes one.

    What is sent while a read's frames are handled (the answers of handlers that finish
    at once) goes out in one write when they are done: one syscall per read, not one
    per answer."""

    def __init__(self, on_message: Callable[[p.Message], None], on_lost: Callable[[], None],
                 max_frame_bytes: int) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._reader = LineReader(max_frame_bytes)
        self._transport: asyncio.Transport | None = None
        #: Output held while a read's frames are handled; None between reads.
        self._held: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except FrameTooLarge as exc:
            log.error("closing the connection: %s", exc)
            self.close()
            return
        if not frames:
            return
        held = self._held = bytearray()
        try:
            for frame in frames:
                _deliver(frame, self._on_message)
        finally:
            self._held = None
            transport = self._transport
            if held and transport is not None and not transport.is_closing():
                transport.write(held)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._on_lost()

    def send(self, message: p.Message) -> None:
        if self._held is not None:
            p.encode_into(message, self._held)
        elif self._transport is not None:
            self._transport.write(p.encode(message))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def aclose(self) -> None:
        self.close()


class WsClientLink:
    """The same interface over WebSocket: one JSON message per text frame, sent in order
    by a writer task, received by a reader task."""

    def __init__(self, ws: ClientConnection, on_message: Callable[[p.Message], None],
                 on_lost: Callable[[], None]) -> None:
        self._ws = ws
        self._on_message = on_message
        self._on_lost = on_lost
        self._sender = OrderedSender(ws)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self._writer = asyncio.get_running_loop().create_task(self._sender.run())

    def send(self, message: p.Message) -> None:
        self._sender.push(p.encode(message)[:-1].decode())

    def close(self) -> None:
        self._sender.close()

    async def aclose(self, timeout: float = 2.0) -> None:
        """Close, and wait for the closing handshake so no task is left behind."""
        self.close()
        _, pending = await asyncio.wait({self._reader, self._writer}, timeout=timeout)
        for task in pending:
            task.cancel()
        await self._ws.close()

    async def _read(self) -> None:
        try:
            async for frame in self._ws:
                _deliver(frame.encode() if isinstance(frame, str) else frame, self._on_message)
        except ConnectionClosed:
            pass
        finally:
            self._writer.cancel()
            self._on_lost()


async def open_ws_link(url: str, on_message: Callable[[p.Message], None],
                       on_lost: Callable[[], None], max_frame_bytes: int,
                       headers: dict[str, str] | None = None) -> WsClientLink:
    """Connect to a ``ws://`` / ``wss://`` URL (our daemon or an iii engine).

    Raises:
        OSError: the engine cannot be reached or refused the handshake.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidURI

    try:
        ws = await connect(url, additional_headers=headers, compression=None,
                           max_size=max_frame_bytes, open_timeout=10)
    except (InvalidHandshake, InvalidURI, TimeoutError) as exc:
        raise OSError(str(exc)) from None
    return WsClientLink(ws, on_message, on_lost)
