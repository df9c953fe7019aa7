"""Auth functions at the door of a listener (an RBAC worker listener, the stream
socket): the driver asks the core to call one with the handshake, and waits for its
verdict, bounded in time and in how many wait at once."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from iii_daemon.core.effects import Authenticated

if TYPE_CHECKING:
    from websockets.http11 import Request

    from iii_daemon.drivers.hub import Hub

#: How long an auth function may take before the connection is refused.
AUTH_TIMEOUT_S = 10.0
#: Connections waiting for an auth function at once; past that they are refused at
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

    async def ask(self, function_id: str, auth_input: dict[str, Any],
                  judge: Callable[[Any], Any]) -> Authenticated:
        """What ``judge`` (a pure function of the core) makes of ``function_id``'s answer
        to ``auth_input``, or why the connection is refused."""
        request_id = next(self._ids)
        if len(self._waiting) >= MAX_WAITING:
            return Authenticated(request_id, None, f"{MAX_WAITING} connections wait for "
                                                   f"an auth function already")
        waiting = self.hub.loop.create_future()
        self._waiting[request_id] = waiting
        self.hub.deliver(self.hub.router.authenticate(request_id, function_id, auth_input,
                                                      judge, time.monotonic()))
        self.hub.flush()
        try:
            return await asyncio.wait_for(waiting, AUTH_TIMEOUT_S)
        except TimeoutError:
            self._waiting.pop(request_id, None)
            return Authenticated(request_id, None, f"{function_id} did not answer "
                                                   f"within {AUTH_TIMEOUT_S:g} s")


def handshake_headers(request: Request) -> dict[str, str]:
    """A handshake's headers by lower-cased name (repeated ones joined with ``, ``)."""
    headers: dict[str, str] = {}
    for name, value in request.headers.raw_items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def query_params(request: Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.path).query, keep_blank_values=True)


def peer_host(peer: Any) -> str:
    return peer[0] if isinstance(peer, tuple) and peer else ""


def close_reason(text: str) -> str:
    """``text`` cut to what a close frame carries (RFC 6455: 123 bytes), whole
    characters only."""
    return text.encode()[:MAX_REASON].decode(errors="ignore")
