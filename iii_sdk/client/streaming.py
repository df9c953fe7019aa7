"""The asyncio client: the daemon's event stream, and calls over one connection (what
``iii watch``, the TUI and tests share). It is not a worker: it never introduces itself,
so it is never listed in ``engine::workers::list``.

    async for event in watch("unix:///run/user/1000/iii/iii.sock", {"errors": True}):
        print(event["event"], event.get("function_id"))

Events are dicts: ``{seq, event, time, ...}`` (``invocation.started``,
``invocation.finished``, ``trigger.fired``, ``trigger.skipped``, ``worker.joined``,
``worker.left``, ``registration.refused``, ``queue.retry``, ``queue.dead_letter``), a
first ``{event: "watching", replayed: N}`` after the replayed history, and
``{event: "missed", count}`` when the daemon dropped events this client was too slow
to take.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from iii_sdk.client.addresses import Address, BadAddress, parse
from iii_sdk.errors import ConnectionFailed, WatchRefused
from iii_sdk.limits import DEFAULT_MAX_REPLY, GREETING_TIMEOUT_S
from iii_sdk.tokens import with_token

#: The longest line accepted: the same limit as the blocking client's.
LINE_LIMIT = DEFAULT_MAX_REPLY

__all__ = ["Calls", "WatchRefused", "watch", "watch_lines"]


#: How the daemon begins an event frame: what :func:`watch_lines` cuts off unread.
EVENT_PREFIX = b'{"type":"event",'


async def watch(address: str, filter: dict[str, Any] | None = None,
                replay: int | None = None,
                headers: dict[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
    """Yield the daemon's events until the connection ends.

    Raises:
        ConnectionFailed: the daemon cannot be reached (or closed the connection).
        WatchRefused: the daemon refused the filter.
    """
    decode = msgspec.json.decode
    async for line in watch_lines(address, filter, replay, headers):
        yield decode(line)


async def watch_lines(address: str, filter: dict[str, Any] | None = None,
                      replay: int | None = None,
                      headers: dict[str, str] | None = None) -> AsyncIterator[bytes]:
    """Yield the daemon's events as JSON (bytes, one object each, without the frame's
    ``type``), as they came: what ``iii watch -o jsonl`` prints, with no decoding and
    encoding again of each event.

    Raises:
        ConnectionFailed: the daemon cannot be reached (or closed the connection).
        WatchRefused: the daemon refused the filter.
    """
    request = {"type": "watch", "filter": filter, "replay": replay}
    where = _parse(address)
    if where.kind == "ws":
        frames = _ws_frames(where.target, request, headers)
    else:
        frames = _unix_frames(where.target, request)
    skip = len(EVENT_PREFIX)
    async for frame in _greeted(frames, address):
        if frame.startswith(EVENT_PREFIX):
            yield b"{" + frame[skip:]
            continue
        message = msgspec.json.decode(frame)
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "event":  # framed some other way (another engine): the long way
            message.pop("type")
            yield msgspec.json.encode(message)
        elif kind == "error" and message.get("request_type") == "watch":
            raise WatchRefused(str(message.get("message")))


def _parse(address: str) -> Address:
    """Raises:
        ConnectionFailed: an address no client speaks."""
    try:
        return parse(address)
    except BadAddress as exc:
        raise ConnectionFailed(str(exc)) from None


async def _greeted(frames: AsyncIterator[bytes], address: str) -> AsyncIterator[bytes]:
    """``frames``, the first of which (a daemon's greeting) must come within
    :data:`GREETING_TIMEOUT_S`.

    Raises:
        ConnectionFailed: it did not: whatever accepted the connection is no daemon
            that works (a watch would otherwise wait on it forever).
    """
    iterator = aiter(frames)
    try:
        first = await asyncio.wait_for(anext(iterator), GREETING_TIMEOUT_S)
    except TimeoutError:
        raise ConnectionFailed(f"{address} accepted the connection but did not answer "
                               f"within {GREETING_TIMEOUT_S:.0f} s") from None
    except StopAsyncIteration:
        return
    yield first
    async for frame in iterator:
        yield frame


async def _open_unix(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the daemon's socket.

    Raises:
        ConnectionFailed: nothing answers there.
    """
    try:
        return await asyncio.open_unix_connection(path, limit=LINE_LIMIT)
    except OSError as exc:
        raise ConnectionFailed(f"cannot connect to {path}: {exc.strerror or exc}") from None


async def _unix_frames(path: str, request: dict[str, Any]) -> AsyncIterator[bytes]:
    reader, writer = await _open_unix(path)
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        async for line in _unix_lines(reader, path):
            yield line
        raise ConnectionFailed(f"the daemon at {path} closed the connection")
    finally:
        writer.close()


async def _open_ws(url: str, headers: dict[str, str] | None) -> Any:
    """A WebSocket to ``url`` (the daemon's listener, with $III_TOKEN if set).

    Raises:
        ConnectionFailed: nothing answers there, or it refused the handshake.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake

    try:
        return await connect(url, additional_headers=with_token(headers), compression=None,
                             max_size=LINE_LIMIT)
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise ConnectionFailed(f"cannot connect to {url}: {exc}") from None


async def _ws_lines(ws: Any) -> AsyncIterator[bytes]:
    """The frames a WebSocket receives, as bytes, until it closes."""
    from websockets.exceptions import ConnectionClosed

    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            yield message.encode() if isinstance(message, str) else message


async def _unix_lines(reader: asyncio.StreamReader, path: str) -> AsyncIterator[bytes]:
    """The lines the daemon sends, until it closes.

    Raises:
        ConnectionFailed: a line over LINE_LIMIT bytes.
    """
    rest = b""
    # A read at a time, many lines each: events come in bursts.
    while chunk := await reader.read(1 << 16):
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            yield line
        if len(rest) > LINE_LIMIT:
            raise ConnectionFailed(f"the daemon at {path} sent a line over "
                                   f"{LINE_LIMIT} bytes")


async def _ws_frames(url: str, request: dict[str, Any],
                     headers: dict[str, str] | None) -> AsyncIterator[bytes]:
    ws = await _open_ws(url, headers)
    try:
        await ws.send(json.dumps(request))
        async for frame in _ws_lines(ws):
            yield frame
    finally:
        await ws.close()
    raise ConnectionFailed(f"{url} closed the connection")


class Calls:
    """Calls of daemon (or any) functions over one connection, for a client that is not
    a worker (the TUI): ``await calls.call("engine::status")``. ``address`` is a socket
    path (or ``unix://``) or a ``ws://`` URL.

    Raises (from :meth:`open` and :meth:`call`):
        ConnectionFailed: the daemon cannot be reached, or the connection dropped.
    """

    def __init__(self, address: str, headers: dict[str, str] | None = None) -> None:
        self.path = address
        self._headers = headers
        #: Sends one frame (bytes); None while not connected.
        self._writer: Callable[[bytes], Any] | None = None
        self._closer: Callable[[], Any] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        where = _parse(self.path)
        if where.kind == "ws":
            ws = await _open_ws(where.target, self._headers)

            def send(frame: bytes) -> None:
                task = loop.create_task(ws.send(frame.decode()))
                # A send that fails (the link dropped) is the reader's news to tell.
                task.add_done_callback(lambda t: t.cancelled() or t.exception())

            self._writer, self._closer = send, ws.close
            self._reader_task = loop.create_task(self._read(_ws_lines(ws)))
            return
        reader, writer = await _open_unix(where.target)
        self._writer, self._closer = writer.write, writer.close
        self._reader_task = loop.create_task(self._read(_unix_lines(reader, self.path)))

    async def _read(self, lines: AsyncIterator[bytes]) -> None:
        try:
            async for line in lines:
                answer = msgspec.json.decode(line)
                if not isinstance(answer, dict):
                    continue
                waiter = self._waiting.pop(str(answer.get("invocation_id")), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(answer)
        except (OSError, ValueError, msgspec.DecodeError, ConnectionFailed):
            pass
        finally:
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionFailed("the daemon closed the connection"))
            self._waiting.clear()
            self._writer = None

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def call(self, function_id: str, data: Any = None, timeout_s: float = 10.0) -> Any:
        """The function's result.

        Raises:
            ConnectionFailed: not connected, or the connection dropped meanwhile.
            InvocationError: the call failed (its code and message), or timed out.
        """
        from iii_sdk.errors import InvocationError

        if self._writer is None:
            raise ConnectionFailed(f"not connected to {self.path}")
        self._ids += 1
        invocation_id = f"tui-{self._ids}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[invocation_id] = waiter
        self._writer(json.dumps({"type": "invokefunction", "function_id": function_id,
                                 "invocation_id": invocation_id, "data": data,
                                 "timeout_ms": int(timeout_s * 1000)}).encode() + b"\n")
        try:
            answer = await asyncio.wait_for(waiter, timeout_s + 1)
        except TimeoutError:
            self._waiting.pop(invocation_id, None)
            raise InvocationError("TIMEOUT", f"no answer within {timeout_s} s",
                                  function_id) from None
        error = answer.get("error")
        if error is not None:
            raise InvocationError(str(error.get("code")), str(error.get("message")),
                                  function_id, stacktrace=error.get("stacktrace"))
        return answer.get("result")

    async def close(self) -> None:
        if self._closer is not None:
            result = self._closer()
            if asyncio.iscoroutine(result):
                with contextlib.suppress(Exception):  # closing what is gone already
                    await result
            self._closer = None
        self._writer = None
        if self._reader_task is not None:
            self._reader_task.cancel()
