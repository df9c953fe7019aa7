"""The WebSocket listener: the same messages and router as the Unix socket, one JSON
message per text frame, so the official iii SDKs attach unchanged.

What the official SDK does, and what we answer (protocol.md § Transports):
- any path, no subprotocol, no compression; WebSocket pings are answered by the library;
- a second socket at ``<path>/otel`` carries binary telemetry: read and dropped, and
  nothing is ever sent on it (its keepalive breaks if we do);
- ``Authorization: Bearer TOKEN`` when a token is configured; without a token the
  listener only binds to loopback addresses (the Unix socket's uid check has no
  equivalent on TCP, so the token stands in for it).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from iii_daemon.hub import Hub
from iii_sdk.ws_sender import OrderedSender

log = logging.getLogger(__name__)
# The library logs every connection at INFO; keep its warnings and errors only.
_protocol_log = logging.getLogger("iii_daemon.ws_listener.protocol")
_protocol_log.setLevel(logging.WARNING)


class ListenerOff(Exception):
    """The listener cannot run; the message says why (shown by ``iii daemon status``)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WsLink:
    """One WebSocket client, as the hub sees it. Writes are queued and sent in order by
    a writer task; the hub's batched NDJSON output is split into one frame per message."""

    def __init__(self, hub: Hub, conn: ServerConnection, max_frame_bytes: int) -> None:
        self.hub = hub
        self.conn = conn
        self.conn_id = 0
        self.max_frame_bytes = max_frame_bytes
        self.sender = OrderedSender(conn)

    # --- Link ---------------------------------------------------------------------------

    def write(self, data: bytes | bytearray) -> None:
        for line in bytes(data).decode().split("\n"):
            if line:
                self.sender.push(line)

    def write_buffer_size(self) -> int:
        transport = self.conn.transport
        return self.sender.queued + (transport.get_write_buffer_size() if transport else 0)

    def close(self) -> None:
        self.sender.close()

    def abort(self) -> None:
        self.conn.transport.abort()

    async def reader(self) -> None:
        async for message in self.conn:
            if isinstance(message, bytes):
                self.hub.frame_error(self.conn_id, "binary frames are not accepted; send "
                                                   "JSON text frames")
                continue
            frame = message.encode()
            if len(frame) > self.max_frame_bytes:
                self.hub.frame_too_large(self.conn_id,
                                         f"frame larger than {self.max_frame_bytes} bytes")
                return
            self.hub.receive(self.conn_id, [frame])


async def _discard(conn: ServerConnection) -> None:
    """The official SDK's telemetry socket: read everything, answer nothing."""
    try:
        async for _ in conn:
            pass
    except ConnectionClosed:
        pass  # the SDK closes it with 1011 when it shuts down: that is its normal end


async def start_ws_server(hub: Hub, host: str, port: int, token: str | None,
                          max_frame_bytes: int) -> Server:
    """Start listening.

    Raises:
        ListenerOff: a non-loopback host without a token, or the port cannot be bound.
    """
    if not is_loopback(host) and not token:
        raise ListenerOff(f"refusing to listen on {host} without a token "
                          "(set [websocket] token, or use 127.0.0.1)")

    def check_token(conn: ServerConnection, request: Request) -> Response | None:
        if token is None:
            return None
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        return conn.respond(HTTPStatus.UNAUTHORIZED, "a valid bearer token is required\n")

    async def handler(conn: ServerConnection) -> None:
        if conn.request is not None and conn.request.path.rstrip("/").endswith("/otel"):
            await _discard(conn)
            return
        link = WsLink(hub, conn, max_frame_bytes)
        hub.attach(link, "ws")
        writer = asyncio.create_task(link.sender.run())
        try:
            await link.reader()
        except ConnectionClosed:
            pass
        finally:
            hub.detach(link.conn_id)
            if not writer.done():
                link.close()
                try:
                    await asyncio.wait_for(writer, timeout=2)
                except (TimeoutError, ConnectionClosed):
                    writer.cancel()

    try:
        return await serve(handler, host, port, compression=None,
                           max_size=2 * max_frame_bytes, max_queue=64,
                           process_request=check_token, logger=_protocol_log,
                           server_header=None)
    except OSError as exc:
        raise ListenerOff(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

