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

import functools
import logging
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from iii_daemon.core.errors import ListenerOff
from iii_daemon.core.rbac import grants_of
from iii_daemon.drivers.access import AccessPolicy, peer_name
from iii_daemon.drivers.doorkeeper import (
    Doorkeeper,
    close_reason,
    handshake_headers,
    peer_host,
    query_params,
)
from iii_daemon.drivers.ws_listener import CountingConnection, refuse_handshake, serve_worker

if TYPE_CHECKING:
    from iii_daemon.drivers.hub import Hub
    from iii_sdk.listener_specs import ListenerSpec

log = logging.getLogger("iii_daemon.drivers.rbac_listener")


async def start_rbac_server(hub: Hub, doorkeeper: Doorkeeper, spec: ListenerSpec,
                            max_frame_bytes: int) -> Server:
    """Listen on ``spec.host:spec.port``.

    Raises:
        ListenerOff: the port cannot be bound.
    """
    policy = AccessPolicy("websocket.listeners", spec.host, auth_decides=True)

    def check(conn: ServerConnection, request: Request) -> Response | None:
        return refuse_handshake(policy, conn, request)

    async def handler(conn: ServerConnection) -> None:
        assert isinstance(conn, CountingConnection) and conn.request is not None
        verdict = await doorkeeper.ask(spec.auth_function_id,
                                       auth_input(conn.request, conn.remote_address),
                                       functools.partial(grants_of, listener=spec))
        if verdict.refusal is not None:
            log.warning("RBAC listener %s:%s refused %s: %s", spec.host, spec.port,
                        peer_name(conn.remote_address), verdict.refusal)
            await conn.close(CloseCode.POLICY_VIOLATION,
                             close_reason(f"refused: {verdict.refusal}"))
            return
        await serve_worker(hub, conn, max_frame_bytes, "ws-rbac", verdict.verdict)

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
    return {"headers": handshake_headers(request), "query_params": query_params(request),
            "ip_address": peer_host(peer)}
