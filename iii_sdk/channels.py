"""Channels from the worker's side: stream bytes (and text control messages) through
the daemon, as the official SDK's ``ChannelWriter`` / ``ChannelReader`` do.

A ref ``{channel_id, access_key, direction}`` (from ``engine::channels::create``, or in
an http trigger's payload: ``request_body`` to read, ``response`` to write) becomes a
:class:`ChannelReader` or :class:`ChannelWriter`; each opens its own WebSocket to the
daemon's listener at ``/ws/channels/{id}`` on first use. The I/O runs on the SDK's loop,
so both kinds work from async handlers (``await writer.write(b"...")``, ``async for
chunk in reader``) and from sync handlers in the thread pool (``writer.write_sync``,
``for chunk in reader``, ``reader.read_all_sync()``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from iii_sdk.tokens import with_token

#: Bytes per frame: the official SDKs split writes the same way.
FRAME_SIZE = 64 * 1024

T = TypeVar("T")


def is_channel_ref(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("channel_id"), str)
            and isinstance(value.get("access_key"), str)
            and value.get("direction") in ("read", "write"))


def channel_url(base: str, ref: dict[str, str], direction: str) -> str:
    base, _, query = base.partition("?")
    query = "&".join(part for part in (query, f"key={quote(ref['access_key'])}",
                                       f"dir={direction}") if part)
    return f"{base.rstrip('/')}/ws/channels/{ref['channel_id']}?{query}"


class ChannelEnd:
    """What a reader and a writer share: the URL, the loop, one WebSocket."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 base: Callable[[], Coroutine[Any, Any, str]], ref: dict[str, str],
                 headers: dict[str, str] | None) -> None:
        self.ref = ref
        self._loop = loop
        self._base = base
        self._headers = with_token(headers)
        self._ws: Any = None
        #: Opening the WebSocket (one attempt, shared by whoever needs it meanwhile).
        self._opening: asyncio.Task[Any] | None = None

    async def _socket(self) -> Any:
        if self._ws is not None:
            return self._ws
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        return await asyncio.shield(self._opening)

    async def _open(self) -> Any:
        from websockets.asyncio.client import connect

        url = channel_url(await self._base(), self.ref, self.ref["direction"])
        self._ws = await connect(url, additional_headers=self._headers,
                                 compression=None, max_size=2 * FRAME_SIZE)
        return self._ws

    async def release(self) -> None:
        """Close the WebSocket, or stop opening it (on the SDK loop; the worker's
        shutdown): a connection left half open would hold the daemon's handshake."""
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        if self._ws is not None:
            await self._ws.close()

    async def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the SDK loop, from whichever loop awaits it."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the SDK loop and wait for it (from a handler's thread).

        Raises:
            RuntimeError: called on the SDK loop itself, where it would block it.
        """
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError("this would block the SDK loop; use the async method")
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coro, self._loop)
        return future.result()


class ChannelWriter(ChannelEnd):
    """The write end: binary data (split into 64 KiB frames) and text messages."""

    async def write(self, data: bytes) -> None:
        await self._on_loop(self._write(bytes(data)))

    def write_sync(self, data: bytes) -> None:
        self._sync(self._write(bytes(data)))

    async def _write(self, data: bytes) -> None:
        ws = await self._socket()
        for start in range(0, max(len(data), 1), FRAME_SIZE):
            await ws.send(data[start:start + FRAME_SIZE])

    async def send_message_async(self, message: str) -> None:
        await self._on_loop(self._send_text(message))

    def send_message(self, message: str) -> None:
        self._sync(self._send_text(message))

    async def _send_text(self, message: str) -> None:
        await (await self._socket()).send(message)

    async def close_async(self) -> None:
        await self._on_loop(self._close())

    def close(self) -> None:
        self._sync(self._close())

    async def _close(self) -> None:
        ws = await self._socket()  # opened even when nothing was written: an empty stream
        await ws.close()


class ChannelReader(ChannelEnd):
    """The read end: iterate the binary frames; text messages go to ``on_message``
    callbacks. The stream ends when the writer closes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._callbacks: list[Callable[[str], Any]] = []

    def on_message(self, callback: Callable[[str], Any]) -> None:
        self._callbacks.append(callback)

    async def _next(self) -> bytes | None:
        from websockets.exceptions import ConnectionClosed

        ws = await self._socket()
        while True:
            try:
                frame = await ws.recv()
            except ConnectionClosed:
                return None
            if isinstance(frame, bytes):
                return frame
            for callback in self._callbacks:
                callback(frame)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._on_loop(self._next())) is not None:
            yield chunk

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self._sync(self._next())) is not None:
            yield chunk

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    def read_all_sync(self) -> bytes:
        return b"".join(self)

    async def close_async(self) -> None:
        await self._on_loop(self._close())

    async def _close(self) -> None:
        await self.release()


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel pair made with ``create_channel()``: give ``reader_ref`` (or
    ``writer_ref``) to another function, use the other end here."""

    writer: ChannelWriter
    reader: ChannelReader
    writer_ref: dict[str, str]
    reader_ref: dict[str, str]


def resolve_refs(data: Any, make: Callable[[dict[str, str]], ChannelReader | ChannelWriter]
                 ) -> Any:
    """``data`` with every channel ref in it replaced by its reader or writer (what the
    official SDK does with a handler's input)."""
    if is_channel_ref(data):
        return make(data)
    if isinstance(data, dict):
        return {key: resolve_refs(value, make) for key, value in data.items()}
    if isinstance(data, list):
        return [resolve_refs(value, make) for value in data]
    return data
