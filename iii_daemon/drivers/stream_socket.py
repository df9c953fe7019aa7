"""The stream socket (``[streams] port``, upstream's 3112): browsers and other clients
join streams over a WebSocket and get their changes live (core/stream_joining.py
decides what each gets; this moves the bytes).

The door is the rule of every listener (Origin, Host, the peer's uid on loopback;
``[streams] allowed_origins`` lets the pages the user chose in), and, when set, the
auth function, called with ``{headers, path, query_params, addr}``: it answers a
``context`` for the join and leave triggers, or raises, and the client gets
``{"type": "unauthorized"}`` and a 1008 close.

Bounds: clients (``max_clients``; past it 1013, try again later), a client's frames
(64 KiB: a join is a few hundred bytes), its subscriptions (the core), and its unsent
frames: one that does not read is cut off past ``client_buffer_bytes``. Frames are
written without waiting (the transport holds what the client has not read yet), so
``stream::set`` never waits for a client.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from iii_daemon.core.effects import StreamPush
from iii_daemon.core.errors import ListenerOff
from iii_daemon.core.stream_clients import unauthorized
from iii_daemon.core.stream_joining import stream_context
from iii_daemon.drivers.access import AccessPolicy, peer_name
from iii_daemon.drivers.doorkeeper import (
    Doorkeeper,
    close_reason,
    handshake_headers,
    query_params,
)
from iii_daemon.drivers.ws_listener import refuse_handshake

if TYPE_CHECKING:
    from iii_daemon.drivers.hub import Hub
    from iii_sdk.listener_specs import StreamSocketSpec

log = logging.getLogger(__name__)
#: websockets' own lines (each connection opening and closing) are not news here.
_protocol_log = logging.getLogger("iii_daemon.drivers.stream_socket.protocol")
_protocol_log.setLevel(logging.WARNING)

#: Largest frame a client may send.
MAX_CLIENT_FRAME = 64 * 1024


class ClientLink:
    """One client's way out. Frames are written at once, behind what the transport
    holds: a fan-out to 1 000 clients makes no task and no coroutine per client, and a
    turn's frames for a client go out in one write (measured: a writer task per client
    held ``stream::set`` to 295/s with 100 subscribers, against 5 900/s with none)."""

    def __init__(self, conn: ServerConnection, limit: int) -> None:
        self.conn = conn
        self.limit = limit

    def unsent(self) -> int:
        return self.conn.transport.get_write_buffer_size()

    def push(self, frames: list[bytes]) -> bool:
        """Send ``frames`` as text messages; False when the client holds over its limit
        unsent already (it is not reading)."""
        if self.conn.protocol.state is not State.OPEN:
            return True  # closing: the reader says it left
        if self.unsent() > self.limit:
            return False
        chunks: list[bytes] = []
        for frame in frames:
            chunks.append(text_header(len(frame)))
            chunks.append(frame)
        self.conn.transport.writelines(chunks)
        return True


def text_header(size: int) -> bytes:
    """The header of a whole, unmasked text message of ``size`` bytes (RFC 6455 5.2),
    as websockets' own framing writes it (a test compares them). Made here because a
    fan-out frames each change once per client: 0.15 us a frame against the library's
    1.06 us (send_text and data_to_send), about 40 % of the daemon's fan-out time.
    Safe beside the library's own frames (pings, close): whole frames never interleave,
    nothing is compressed, and the connection's state is checked first."""
    if size < 126:
        return bytes((0x81, size))
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big")
    return b"\x81\x7f" + size.to_bytes(8, "big")


class StreamSocket:
    def __init__(self, hub: Hub, doorkeeper: Doorkeeper, spec: StreamSocketSpec) -> None:
        self.hub = hub
        self.doorkeeper = doorkeeper
        self.spec = spec
        self.links: dict[int, ClientLink] = {}
        self._ids = itertools.count(1)
        hub.router.stream_clients.max_subscriptions = spec.max_subscriptions
        hub.commands[StreamPush] = self._push
        hub.flushers.append(self._flush)
        #: Frames for each client since the last flush.
        self._pending: dict[int, list[bytes]] = {}
        self.policy = AccessPolicy("streams", spec.host,
                                   allowed_origins=frozenset(spec.allowed_origins),
                                   allowed_hosts=frozenset(spec.allowed_hosts),
                                   auth_decides=spec.auth_function_id is not None)

    def _push(self, push: StreamPush) -> int:
        """Hold the clients' frames until the hub flushes: a turn's changes go out to each
        client in one write. Returns their bytes (the output budget of whoever made
        them counts them, so a burst of writes pauses before it holds too much)."""
        pending, links = self._pending, self.links
        size = 0
        for client_id, frame in push.frames:
            if client_id in links:
                held = pending.get(client_id)
                if held is None:
                    pending[client_id] = [frame]
                else:
                    held.append(frame)
                size += len(frame)
        return size

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        for client_id, frames in pending.items():
            link = self.links.get(client_id)
            if link is not None and not link.push(frames):
                log.warning("closing stream client %s: it is not reading (%d bytes unsent, "
                            "[streams] client_buffer_bytes is %d)",
                            peer_name(link.conn.remote_address), link.unsent(), link.limit)
                del self.links[client_id]
                link.conn.transport.abort()

    def _check(self, conn: ServerConnection, request: Request) -> Response | None:
        return refuse_handshake(self.policy, conn, request)

    async def _context(self, conn: ServerConnection) -> tuple[bool, Any]:
        """``(let in, context)``: what the auth function, if any, says of ``conn``."""
        function_id = self.spec.auth_function_id
        if function_id is None:
            return True, None
        request = conn.request
        assert request is not None
        verdict = await self.doorkeeper.ask(function_id, {
            "headers": handshake_headers(request), "path": request.path,
            "query_params": query_params(request), "addr": peer_name(conn.remote_address)},
            stream_context)
        if verdict.refusal is None:
            return True, verdict.verdict
        log.warning("stream socket refused %s: %s", peer_name(conn.remote_address),
                    verdict.refusal)
        with contextlib.suppress(ConnectionClosed):  # it may be gone already
            await conn.send(unauthorized(), text=True)
            await conn.close(CloseCode.POLICY_VIOLATION,
                             close_reason(f"refused: {verdict.refusal}"))
        return False, None

    async def _serve(self, conn: ServerConnection) -> None:
        if len(self.links) >= self.spec.max_clients:
            await conn.close(CloseCode.TRY_AGAIN_LATER, f"{self.spec.max_clients} stream "
                                                        f"clients already ([streams] "
                                                        f"max_clients)")
            return
        admitted, context = await self._context(conn)
        if not admitted:
            return
        hub, router = self.hub, self.hub.router
        client_id = next(self._ids)
        self.links[client_id] = ClientLink(conn, self.spec.client_buffer_bytes)
        hub.deliver(router.stream_client_opened(client_id, context,
                                                peer_name(conn.remote_address),
                                                time.monotonic()))
        hub.flush()
        try:
            async for message in conn:
                if client_id not in self.links:
                    break  # cut off
                hub.deliver(router.stream_client_said(client_id, message, time.monotonic()))
                hub.flush()
        except ConnectionClosed:
            pass
        finally:
            self.links.pop(client_id, None)
            hub.deliver(router.stream_client_closed(client_id, time.monotonic()))
            hub.flush()

    async def start(self) -> Server:
        """Listen.

        Raises:
            ListenerOff: the port cannot be bound.
        """
        try:
            return await serve(self._serve, self.spec.host, self.spec.port, compression=None,
                               max_size=MAX_CLIENT_FRAME, max_queue=16,
                               process_request=self._check, server_header=None,
                               logger=_protocol_log)
        except OSError as exc:
            raise ListenerOff(f"cannot listen on {self.spec.host}:{self.spec.port}: "
                              f"{exc.strerror or exc}") from None
