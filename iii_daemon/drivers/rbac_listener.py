"""Extra worker listeners where an auth function decides (``[[websocket.listeners]]``,
the upstream RBAC port): for each connection the daemon calls the listener's
``auth_function_id`` with the handshake (the upstream ``AuthInput``: headers, query
parameters, the client's address) and attaches the worker with the rights it answers
(``core/rbac.py``), or closes it (1008) saying why: the function raised, is missing,
answered something that is not an ``AuthResult``, or did not answer in time.

Browsers are kept out as on every listener (Origin; Host on a loopback listener); the
token and same-user rules of ``[websocket]`` do not apply here: the auth function is
the door.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from iii_daemon.core.effects import Authenticated
from iii_daemon.core.errors import ListenerOff
from iii_daemon.drivers.access import AccessPolicy
from iii_daemon.drivers.ws_listener import CountingConnection, serve_worker

if TYPE_CHECKING:
    from iii_daemon.drivers.hub import Hub
    from iii_sdk.listener_specs import ListenerSpec

log = logging.getLogger("iii_daemon.drivers.rbac_listener")

#: How long the auth function may take before the connection is refused.
AUTH_TIMEOUT_S = 10.0
#: Connections waiting for the auth function at once; past that they are refused at
#: once (a flood of handshakes cannot queue calls without bound).
MAX_WAITING = 256
#: Close reasons are at most 123 bytes (RFC 6455).
MAX_REASON = 120


class Doorkeeper:
    """Asks the core to run auth functions, and hands their verdicts back."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Authenticated]] = {}
        hub.commands[Authenticated] = self._decided

    def _decided(self, verdict: Authenticated) -> None:
        waiting = self._waiting.pop(verdict.request_id, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(verdict)

    async def ask(self, spec: ListenerSpec, auth_input: dict[str, Any]) -> Authenticated:
        request_id = next(self._ids)
        if len(self._waiting) >= MAX_WAITING:
            return Authenticated(request_id, None, f"{MAX_WAITING} connections wait for "
                                                   f"the auth function already")
        waiting = self.hub.loop.create_future()
        self._waiting[request_id] = waiting
        self.hub.deliver(self.hub.router.authenticate(request_id, spec, auth_input,
                                                      time.monotonic()))
        self.hub.flush()
        try:
            return await asyncio.wait_for(waiting, AUTH_TIMEOUT_S)
        except TimeoutError:
            self._waiting.pop(request_id, None)
            return Authenticated(request_id, None, f"{spec.auth_function_id} did not answer "
                                                   f"within {AUTH_TIMEOUT_S:g} s")


async def start_rbac_server(hub: Hub, doorkeeper: Doorkeeper, spec: ListenerSpec,
                            max_frame_bytes: int) -> Server:
    """Listen on ``spec.host:spec.port``.

    Raises:
        ListenerOff: the port cannot be bound.
    """
    policy = AccessPolicy("websocket.listeners", spec.host, auth_decides=True)

    def check(conn: ServerConnection, request: Request) -> Response | None:
        refusal = policy.check(request.headers.get_all, conn.remote_address,
                               conn.local_address)
        if refusal is not None:
            from http import HTTPStatus

            return conn.respond(HTTPStatus(refusal.status), refusal.reason + "\n")
        return None

    async def handler(conn: ServerConnection) -> None:
        assert isinstance(conn, CountingConnection) and conn.request is not None
        verdict = await doorkeeper.ask(spec, auth_input(conn.request, conn.remote_address))
        if verdict.grants is None:
            reason = f"refused: {verdict.refusal}"
            log.warning("RBAC listener %s:%s refused %s: %s", spec.host, spec.port,
                        _peer(conn.remote_address), verdict.refusal)
            await conn.close(CloseCode.POLICY_VIOLATION, reason.encode()[:MAX_REASON]
                             .decode(errors="ignore"))
            return
        await serve_worker(hub, conn, max_frame_bytes, "ws-rbac", verdict.grants)

    try:
        return await serve(handler, spec.host, spec.port, compression=None,
                           max_size=2 * max_frame_bytes, max_queue=16,
                           process_request=check, server_header=None,
                           create_connection=CountingConnection)
    except OSError as exc:
        raise ListenerOff(f"cannot listen on {spec.host}:{spec.port}: "
                          f"{exc.strerror or exc}") from None


def auth_input(request: Request, peer: Any) -> dict[str, Any]:
    """The upstream ``AuthInput`` of a handshake."""
    headers: dict[str, str] = {}
    for name, value in request.headers.raw_items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    query = parse_qs(urlsplit(request.path).query, keep_blank_values=True)
    return {"headers": headers, "query_params": query,
            "ip_address": peer[0] if isinstance(peer, tuple) and peer else ""}


def _peer(peer: Any) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "a client"
