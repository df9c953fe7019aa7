"""HTTP through the hub: requests for ``http`` triggers into the core and their replies
back to the listener, and the calls of HTTP-invoked functions out to the HTTP caller."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from iii_daemon.core.effects import EVENTS, HttpCall, HttpReply
from iii_daemon.core.http_requests import HttpRequest
from iii_daemon.drivers.links import Carrier

if TYPE_CHECKING:
    from iii_daemon.drivers.http_caller import HttpCaller

log = logging.getLogger("iii_daemon.drivers.hub")


class HttpBridge:
    def __init__(self, hub: Carrier) -> None:
        self.hub = hub
        #: HTTP requests waiting for their reply, by request id.
        self._waiting: dict[int, Callable[[HttpReply], None]] = {}
        self._next_id = 0
        #: Sends the requests of HTTP-invoked functions; made (and aiohttp's client
        #: imported, a tenth of a second) by the first one.
        self._caller: HttpCaller | None = None

    def request(self, make: Callable[[int], HttpRequest],
                on_reply: Callable[[HttpReply], None]) -> int:
        """Hand an HTTP request to the core; ``on_reply`` gets its answer (now or
        later). Returns the request's id (for :meth:`gone`)."""
        self._next_id += 1
        request_id = self._next_id
        self._waiting[request_id] = on_reply
        try:
            out = self.hub.router.http_request(make(request_id), time.monotonic())
        except Exception:
            log.exception("error while handling an http request")
            out = [(EVENTS, HttpReply(request_id, 500, {"error": "internal error while "
                                                            "handling this request (see "
                                                            "the daemon log)"}))]
        self.hub.deliver(out)
        self.hub.flush()
        return request_id

    def reply(self, reply: HttpReply) -> None:
        """The core's answer to a request (dropped when its client went away)."""
        waiting = self._waiting.pop(reply.request_id, None)
        if waiting is not None:
            waiting(reply)

    def gone(self, request_id: int) -> None:
        """Its client went away: a reply that comes later is dropped."""
        self._waiting.pop(request_id, None)

    def call(self, call: HttpCall) -> None:
        """The core calls an HTTP-invoked function."""
        if self._caller is None:
            from iii_daemon.drivers.http_caller import HttpCaller
            self._caller = HttpCaller()
        self._caller.start(call, self._answered)

    def _answered(self, invocation_id: str, result: bytes | None,
                  error: dict[str, str] | None) -> None:
        """An HTTP-invoked function's request ended: the core answers its caller."""
        try:
            self.hub.deliver(self.hub.router.http_answered(invocation_id, result, error,
                                                           time.monotonic()))
        except Exception:
            log.exception("error after an http function answered; the hub goes on")
        self.hub.flush()

    async def close(self) -> None:
        """Stop the requests of HTTP-invoked functions still running, if any ran."""
        if self._caller is not None:
            await self._caller.close()
