"""The WebSocket listener: the same messages and router as the Unix socket, one JSON
message per text frame, so the official iii SDKs attach unchanged.

What the official SDK does, and what we answer (protocol.md § Transports):
- any path, no subprotocol, no compression; WebSocket pings are answered by the library;
- a second socket at ``<path>/otel`` carries binary telemetry: read and dropped, and
  nothing is ever sent on it (its keepalive breaks if we do);
- who may connect is decided by :mod:`iii_daemon.drivers.access` (Origin, Host, peer uid, token);
  without a token the listener only binds to loopback addresses;
- ``/ws/channels/{id}?key=KEY&dir=read|write`` opens one end of a channel
  (:mod:`iii_daemon.drivers.channels`): the key is checked during the handshake.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from iii_daemon.core.errors import ListenerOff
from iii_daemon.core.rbac import Grants
from iii_daemon.drivers.access import AccessPolicy, can_check_peer_uid, is_loopback
from iii_daemon.drivers.channels import FRAME_LIMIT, Channel, ChannelError, Channels
from iii_daemon.drivers.hub import Hub
from iii_sdk.framing import Oversized
from iii_sdk.ws_sender import OrderedSender

log = logging.getLogger(__name__)
# The library logs every connection at INFO; keep its warnings and errors only.
_protocol_log = logging.getLogger("iii_daemon.drivers.ws_listener.protocol")
_protocol_log.setLevel(logging.WARNING)

#: Bytes of WebSocket framing per message we do not see as message text (an upper bound).
_FRAME_OVERHEAD = 14



class CountingConnection(ServerConnection):
    """Counts the bytes received and not yet handed to us as messages, so the hub can
    cap what all connections hold in WebSocket messages still arriving."""

    link: WsLink | None = None
    unconsumed = 0
    #: The channel end this connection opened (``/ws/channels/...``), if any, and which.
    channel: Channel | None = None
    channel_direction = ""

    def data_received(self, data: bytes) -> None:
        link = self.link
        if link is not None:
            self.unconsumed += len(data)
            if not link.hub.parked(link.conn_id, self.unconsumed):
                return  # cut off: over the daemon's limit
        super().data_received(data)

    def consumed(self, size: int) -> None:
        link = self.link
        before = self.unconsumed
        self.unconsumed = max(0, before - size - _FRAME_OVERHEAD)
        if link is not None and before:
            link.hub.parked(link.conn_id, self.unconsumed)


class WsLink:
    """One WebSocket client, as the hub sees it. Writes are queued and sent in order by
    a writer task; the hub's batched NDJSON output is split into one frame per message."""

    def __init__(self, hub: Hub, conn: CountingConnection, max_frame_bytes: int) -> None:
        self.hub = hub
        self.conn = conn
        self.conn_id = 0
        self.max_frame_bytes = max_frame_bytes
        self.sender = OrderedSender(conn, self._drained)
        self._readable = asyncio.Event()
        self._readable.set()

    def _drained(self) -> None:
        self.hub.drained(self.conn_id)

    # --- Link ---------------------------------------------------------------------------

    def write(self, data: bytes | bytearray) -> None:
        # Frames were checked for UTF-8 where they entered; "replace" is a last guard so
        # a bug can never raise here, in the middle of another connection's delivery.
        for line in bytes(data).decode(errors="replace").split("\n"):
            if line:
                self.sender.push(line)

    def write_buffer_size(self) -> int:
        transport = self.conn.transport
        return self.sender.queued + (transport.get_write_buffer_size() if transport else 0)

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    def close(self, restarting: bool = False) -> None:
        # 1012 (service restart), not 1001: SDKs that reconnect only after an abnormal
        # close (the official Python SDK 0.11) come back after a restart too.
        self.sender.close(CloseCode.SERVICE_RESTART if restarting else CloseCode.NORMAL_CLOSURE)
        self._readable.set()  # a paused reader must see the end too

    def abort(self) -> None:
        self.sender.discard()
        self._readable.set()
        self.conn.transport.abort()

    async def reader(self) -> None:
        while True:
            await self._readable.wait()
            message = await self.conn.recv()
            if isinstance(message, bytes):
                self.conn.consumed(len(message))
                self.hub.frame_error(self.conn_id, "binary frames are not accepted; send "
                                                   "JSON text frames")
                continue
            frame = message.encode()
            self.conn.consumed(len(frame))
            if len(frame) > self.max_frame_bytes:
                # Up to the library's cap (twice the limit) a message is whole: drop it,
                # answer what it was, keep the connection.
                self.hub.oversized(self.conn_id, [Oversized.of(frame)], self.max_frame_bytes)
                continue
            self.hub.receive(self.conn_id, [frame])


async def serve_worker(hub: Hub, conn: CountingConnection, max_frame_bytes: int,
                       transport: str, grants: Grants | None = None) -> None:
    """One worker's connection, attached to the hub until it closes."""
    link = WsLink(hub, conn, max_frame_bytes)
    hub.attach(link, transport, grants=grants)
    conn.link = link
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


async def _discard(conn: ServerConnection) -> None:
    """The official SDK's telemetry socket: read everything, answer nothing."""
    try:
        async for _ in conn:
            pass
    except ConnectionClosed:
        pass  # the SDK closes it with 1011 when it shuts down: that is its normal end


CHANNEL_PREFIX = "/ws/channels/"


def channel_request(path: str) -> tuple[str, str, str] | None:
    """``(channel_id, key, direction)`` of a channel URL, or None for other paths."""
    parts = urlsplit(path)
    if not parts.path.startswith(CHANNEL_PREFIX):
        return None
    query = parse_qs(parts.query)
    return (parts.path[len(CHANNEL_PREFIX):].strip("/"), (query.get("key") or [""])[-1],
            (query.get("dir") or [""])[-1])


async def serve_channel_end(conn: ServerConnection, channels: Channels, channel: Channel,
                            direction: str) -> None:
    """Relay one end: a writer's frames into the channel, or the channel to a reader."""
    try:
        if direction == "write":
            async for message in conn:
                if not await channel.put(message):
                    break  # the reader went away
        else:
            # A reader that leaves while nothing is written would otherwise be noticed
            # only at the next frame: its channel (and this handler, which the daemon's
            # shutdown waits for) would linger as long as the writer stays quiet.
            gone = asyncio.get_running_loop().create_task(_close_when_gone(conn, channel))
            try:
                while (frame := await channel.get()) is not None:
                    await conn.send(frame)
                await conn.close()
            finally:
                gone.cancel()
    except ConnectionClosed:
        pass
    finally:
        if direction == "write":
            channel.end()
        else:
            channels.drop(channel)


async def _close_when_gone(conn: ServerConnection, channel: Channel) -> None:
    await conn.wait_closed()
    channel.close()


def refuse_handshake(policy: AccessPolicy, conn: ServerConnection,
                     request: Request) -> Response | None:
    """The HTTP answer refusing a handshake ``policy`` does not let in (403, 401, 400
    with why), or None: it may go on. Every WebSocket listener asks this first."""
    refusal = policy.check(request.headers.get_all, conn.remote_address,
                           conn.local_address)
    if refusal is None:
        return None
    return conn.respond(HTTPStatus(refusal.status), refusal.reason + "\n")


async def start_ws_server(hub: Hub, policy: AccessPolicy, port: int,
                          max_frame_bytes: int, channels: Channels | None = None) -> Server:
    """Start listening on ``policy.host``.

    Raises:
        ListenerOff: a non-loopback host without a token, or the port cannot be bound.
    """
    host = policy.host
    if not is_loopback(host) and not policy.token:
        raise ListenerOff(f"refusing to listen on {host} without a token "
                          "(set [websocket] token, or use 127.0.0.1)")
    if not policy.token and not can_check_peer_uid():
        log.warning("cannot tell which user a TCP client runs as on this platform; set "
                    "[websocket] token to keep other local users out")

    def check(conn: ServerConnection, request: Request) -> Response | None:
        refused = refuse_handshake(policy, conn, request)
        if refused is not None:
            return refused
        wanted = channel_request(request.path)
        if wanted is not None:
            try:
                if channels is None:
                    raise ChannelError(404, "this daemon has no channels")
                channel = channels.open(*wanted)
            except ChannelError as exc:
                return conn.respond(HTTPStatus(exc.status), f"{exc}\n")
            assert isinstance(conn, CountingConnection)
            conn.channel, conn.channel_direction = channel, wanted[2]
            # A channel's frames are small (the SDKs send 64 KiB): bound them from the
            # first frame on.
            conn.protocol.max_message_size = FRAME_LIMIT
        return None

    async def handler(conn: ServerConnection) -> None:
        assert isinstance(conn, CountingConnection)
        channel = conn.channel
        if channel is not None and channels is not None:
            await serve_channel_end(conn, channels, channel, conn.channel_direction)
            return
        if conn.request is not None and conn.request.path.rstrip("/").endswith("/otel"):
            await _discard(conn)
            return
        await serve_worker(hub, conn, max_frame_bytes, "ws")

    try:
        return await serve(handler, host, port, compression=None,
                           max_size=2 * max_frame_bytes, max_queue=16,
                           process_request=check, logger=_protocol_log,
                           server_header=None, create_connection=CountingConnection)
    except OSError as exc:
        raise ListenerOff(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
