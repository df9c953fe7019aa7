"""The HTTP listener: requests for ``http`` triggers, answered by their functions.

A driver (aiohttp's low-level server): it checks who asks (:mod:`iii_daemon.drivers.access`:
Origin, Host, peer uid, token; the uid once per connection), bounds what it reads,
makes the request's two channels and hands the request to the core through the hub;
the core routes it and answers with an :class:`HttpReply`, which becomes the response:

- the daemon's own status (404, 405, 413, 422, 500, 502, 503, 504) with a JSON body;
- or the function's result: when the function opened the write end of the ``response``
  channel, the response is what it writes there (``set_status`` / ``set_headers`` text
  frames, then binary body frames, streamed as they come, until it closes); else its
  return value (:func:`iii_daemon.core.http_requests.response_of`). A function that returns
  null is given a moment (``STREAM_GRACE_S``) to open that channel, because the official
  SDK opens it in the background.

The request body is read once: a JSON body is parsed for the payload's ``body`` (and
also written to the ``request_body`` channel); any other body is streamed into that
channel as it arrives, at most ``buffer_size`` frames ahead of the function reading it.
CORS headers are sent only to configured origins (``[http] cors_origins``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from iii_daemon.core.effects import HttpReply
from iii_daemon.core.errors import ListenerOff
from iii_daemon.core.http_requests import HttpRequest, Response, response_of, response_of_raw
from iii_daemon.core.triggers.http import METHODS
from iii_daemon.drivers.access import AccessPolicy, can_check_peer_uid, is_loopback
from iii_daemon.drivers.channels import Channel, ChannelError, Channels
from iii_daemon.drivers.hub import Hub

log = logging.getLogger(__name__)

#: How long a function that returned null may take to open its response channel.
STREAM_GRACE_S = 0.25
#: The longest a streamed response may pause between two frames.
STREAM_IDLE_S = 60.0
#: Requests served at once; more get 503 (each holds at most one body in memory).
MAX_REQUESTS = 10_000
#: Connections open at once; more are closed as they arrive.
MAX_CONNECTIONS = 4_096
#: Body frames written to a request channel.
CHUNK = 64 * 1024
#: The core always answers (every call has a deadline); this only guards against a bug.
REPLY_WITHIN_S = 3_700.0
_JSON_ERRORS = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 3111
    max_body_bytes: int = 64 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()


def _json_response(status: int, body: object,
                   headers: tuple[tuple[str, str], ...] = ()) -> web.Response:
    response = web.Response(status=status, body=msgspec.json.encode(body),
                            content_type="application/json")
    for name, value in headers:
        response.headers[name] = value
    return response


def _reply_response(reply: HttpReply) -> web.Response:
    """The daemon's own answer (a status and a JSON body)."""
    assert reply.status is not None
    return _json_response(reply.status, reply.body, reply.headers)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


class HttpListener:
    def __init__(self, hub: Hub, channels: Channels, config: HttpConfig) -> None:
        self.hub = hub
        self.channels = channels
        self.config = config
        self.policy = AccessPolicy("http", config.host, config.token,
                                   frozenset(config.cors_origins),
                                   frozenset(config.allowed_hosts),
                                   origins_key="cors_origins")
        self.active = 0
        #: Connections whose peer passed the uid rule (gone with their transport).
        self._uid_ok: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()

    # --- the request --------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        local = transport.get_extra_info("sockname") if transport else None
        refusal = self.policy.check(lambda name: request.headers.getall(name, []), peer,
                                    local,
                                    uid_checked=transport in self._uid_ok)
        if refusal is not None:
            return web.Response(status=refusal.status, text=refusal.reason + "\n")
        if transport is not None and transport not in self._uid_ok:
            self._uid_ok.add(transport)
        origin = request.headers.get("Origin")
        if origin is not None and request.method == "OPTIONS" and \
                "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
        elif self.active >= MAX_REQUESTS:
            response = _json_response(503, {"error": f"too many requests in flight "
                                                     f"({MAX_REQUESTS})"})
        else:
            self.active += 1
            try:
                response = await self._serve(request)
            finally:
                self.active -= 1
        if origin is not None:  # allowed, or the policy would have refused it
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            if response.status == 204 and request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = ", ".join(METHODS)
                response.headers["Access-Control-Allow-Headers"] = request.headers.get(
                    "Access-Control-Request-Headers", "content-type")
                response.headers["Access-Control-Max-Age"] = "600"
        return response

    def _too_large(self) -> HttpReply:
        return HttpReply(0, 413, {"error": f"the body is larger than "
                                           f"{self.config.max_body_bytes} bytes"})

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _reply_response(self._too_large())
        expect = request.headers.get("Expect")
        if expect is not None:  # curl asks before a large upload, and waits a second
            if expect.lower() != "100-continue":
                return _json_response(417, {"error": f"cannot meet Expect: {expect}"})
            if request.version >= (1, 1):
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        json_body = _is_json(request.content_type) and request.body_exists
        raw: bytes | None = None
        body: object = None
        if json_body:
            raw = await self._read_all(request, limit)
            if raw is None:
                return _reply_response(self._too_large())
            try:
                body = msgspec.json.decode(raw) if raw else None
            except _JSON_ERRORS as exc:
                return _json_response(400, {"error": f"the body is not valid JSON: {exc}"})
        try:
            request_channel, response_channel = self._channel_pair()
        except ChannelError as exc:  # too many at once
            return _json_response(exc.status, {"error": str(exc)})
        loop = asyncio.get_running_loop()
        replied: asyncio.Future[HttpReply] = loop.create_future()
        #: The reply, or the function opening its response channel: whichever is first.
        first: asyncio.Future[None] = loop.create_future()

        def on_reply(reply: HttpReply) -> None:
            if not replied.done():
                replied.set_result(reply)
            if not first.done():
                first.set_result(None)

        writer_opened = asyncio.Event()

        def on_writer() -> None:
            writer_opened.set()
            if not first.done():
                first.set_result(None)

        response_channel.on_writer = on_writer

        def too_large() -> None:  # a streamed body went past the limit
            on_reply(self._too_large())

        pump: asyncio.Task[None] | None = None
        if raw or (raw is None and request.body_exists):
            pump = asyncio.create_task(self._pump_body(request, request_channel, raw,
                                                       too_large))
        else:
            request_channel.end()  # no body: the function reads an empty stream

        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        query = {key: request.query[key] for key in request.query}
        request_id = self.hub.http_request(lambda request_id: HttpRequest(
            request_id, request.method, request.path, query, headers, body,
            request_channel.ref("read"), response_channel.ref("write")), on_reply)
        guard = loop.call_later(REPLY_WITHIN_S, on_reply, HttpReply(0, 504, {
            "error": "no answer from the daemon's core"}))
        try:
            await first
            if replied.done():
                return await self._respond(request, replied.result(), response_channel,
                                           writer_opened)
            # The function opened its response channel: it streams while it runs.
            return await self._stream(request, response_channel, replied)
        finally:
            guard.cancel()
            self.hub.http_gone(request_id)
            if pump is not None:
                pump.cancel()
            self.channels.drop(request_channel)
            self.channels.drop(response_channel)

    def _channel_pair(self) -> tuple[Channel, Channel]:
        """A request's two channels: the daemon writes the body into the first and
        reads the response from the second.

        Raises:
            ChannelError: too many channels at once.
        """
        request_channel = self.channels.create(held="write")
        try:
            return request_channel, self.channels.create(held="read")
        except ChannelError:
            self.channels.drop(request_channel)
            raise

    async def _read_all(self, request: web.BaseRequest, limit: int) -> bytes | None:
        """The whole body, or None past ``limit`` bytes."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _pump_body(self, request: web.BaseRequest, channel: Channel,
                         raw: bytes | None, too_large: Callable[[], None]) -> None:
        """Write the body into the request channel (waits while the channel is full)."""
        try:
            if raw is not None:
                for start in range(0, len(raw), CHUNK):
                    if not await channel.put(raw[start:start + CHUNK]):
                        return
                return
            size = 0
            async for chunk in request.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > self.config.max_body_bytes:
                    too_large()
                    return
                if not await channel.put(chunk):
                    return
        except Exception as exc:  # the client went away, or sent a broken body
            log.debug("http %s %s: the body ended early: %s", request.method, request.path,
                      exc)
        finally:
            channel.end()

    # --- the response -------------------------------------------------------------------

    async def _respond(self, request: web.BaseRequest, reply: HttpReply,
                       channel: Channel, writer_opened: asyncio.Event) -> web.StreamResponse:
        if reply.status is not None:
            return _reply_response(reply)
        result_bytes = reply.result or b"null"
        if not writer_opened.is_set() and result_bytes == b"null":
            with contextlib.suppress(TimeoutError):  # the official SDK opens it late
                await asyncio.wait_for(writer_opened.wait(), STREAM_GRACE_S)
        if writer_opened.is_set():
            return await self._stream(request, channel, None)
        plain = response_of_raw(result_bytes)
        if plain is not None:
            return _plain(plain)
        try:
            result = msgspec.json.decode(result_bytes)
        except _JSON_ERRORS:  # the daemon checked it on the way in; a guard only
            return _json_response(500, {"error": "the function's result is not JSON"})
        return _plain(response_of(result))

    async def _stream(self, request: web.BaseRequest, channel: Channel,
                      replied: asyncio.Future[HttpReply] | None) -> web.StreamResponse:
        """The response the function writes to its channel, streamed as it comes. While
        the function still runs (``replied`` pending), its failure before the body began
        is answered as a failure; once the body began, it ends the response there."""
        status, headers = 200, dict[str, str]()
        response: web.StreamResponse | None = None
        next_frame: asyncio.Future[Any] | None = None
        try:
            while True:
                if next_frame is None:
                    next_frame = asyncio.ensure_future(channel.get())
                waiting: set[asyncio.Future[Any]] = {next_frame}
                if replied is not None:
                    waiting.add(replied)
                await asyncio.wait(waiting, timeout=STREAM_IDLE_S,
                                   return_when=asyncio.FIRST_COMPLETED)
                if replied is not None and replied.done():
                    reply, replied = replied.result(), None
                    if reply.status is not None:  # failed, timed out, its worker gone
                        if response is None:
                            return _reply_response(reply)
                        break
                    if not next_frame.done():
                        continue  # it returned; what it wrote goes on coming
                if not next_frame.done():
                    log.warning("http %s %s: the response channel was silent for %.0f s; "
                                "ending the response", request.method, request.path,
                                STREAM_IDLE_S)
                    break
                frame, next_frame = next_frame.result(), None
                if frame is None:
                    break
                if isinstance(frame, str):
                    status, headers = _control(frame, status, headers, response is not None)
                    continue
                if response is None:
                    response = _stream_response(status, headers)
                    await response.prepare(request)
                await response.write(frame)
        finally:
            if next_frame is not None:
                next_frame.cancel()
        if response is None:
            return _stream_response(status, headers, empty=True)
        await response.write_eof()
        return response


def _plain(response: Response) -> web.Response:
    plain = web.Response(status=response.status, body=response.body)
    for name, value in response.headers:
        plain.headers.add(name, value)
    return plain


def _stream_response(status: int, headers: dict[str, str],
                     empty: bool = False) -> web.StreamResponse:
    response = web.Response(status=status) if empty else web.StreamResponse(status=status)
    for name, value in headers.items():
        response.headers[name] = value
    return response


def _control(frame: str, status: int, headers: dict[str, str],
             started: bool) -> tuple[int, dict[str, str]]:
    """Apply a ``set_status`` / ``set_headers`` text frame (ignored once the body began:
    they are on the wire already)."""
    try:
        message = msgspec.json.decode(frame)
    except _JSON_ERRORS:
        return status, headers
    if started or not isinstance(message, dict):
        return status, headers
    if message.get("type") == "set_status":
        code = message.get("status_code")
        if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
            status = code
    elif message.get("type") == "set_headers" and isinstance(message.get("headers"), dict):
        for name, value in message["headers"].items():
            text = str(value)
            if name and "\n" not in name + text and "\r" not in name + text:
                headers[str(name)] = text
    return status, headers


class _Refused(asyncio.Protocol):
    """A connection over ``MAX_CONNECTIONS``: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


async def start_http_server(listener: HttpListener) -> Callable[[], Awaitable[None]]:
    """Listen on ``config.host:port``; returns what closes the listener.

    Raises:
        ListenerOff: a non-loopback host without a token, or the port cannot be bound.
    """
    config = listener.config
    if not is_loopback(config.host) and not config.token:
        raise ListenerOff(f"refusing to listen on {config.host} without a token "
                          "(set [http] token, or use 127.0.0.1)")
    if not config.token and not can_check_peer_uid():
        log.warning("cannot tell which user an HTTP client runs as on this platform; set "
                    "[http] token to keep other local users out")
    server = web.Server(listener.handle, max_line_size=8190, max_field_size=8190,
                        max_headers=128, access_log=None)

    def protocol() -> asyncio.Protocol:
        if len(server.connections) >= MAX_CONNECTIONS:
            return _Refused()
        return server()

    loop = asyncio.get_running_loop()
    try:
        tcp = await loop.create_server(protocol, config.host, config.port)
    except OSError as exc:
        raise ListenerOff(f"cannot listen on {config.host}:{config.port}: "
                          f"{exc.strerror or exc}") from None

    async def close() -> None:
        tcp.close()
        await server.shutdown(1.0)

    return close
