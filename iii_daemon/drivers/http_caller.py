"""The driver side of HTTP-invoked functions: sends each request (aiohttp, one client
session for the daemon) and hands the outcome back to the core through ``done``.

Requests run as tasks on the loop, never blocking it; each is bounded by its timeout
and by :data:`~iii_daemon.core.http_functions.MAX_RESPONSE_BYTES` of response.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

import aiohttp

from iii_daemon.core import http_functions
from iii_daemon.core.effects import HttpCall
from iii_sdk.error_codes import ErrorCode

log = logging.getLogger(__name__)

#: ``done(invocation_id, result JSON or None, error or None)``
Done = Callable[[str, "bytes | None", "dict[str, str] | None"], None]


class HttpCaller:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, call: HttpCall, done: Done) -> None:
        task = asyncio.get_running_loop().create_task(self._call(call, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, call: HttpCall, done: Done) -> None:
        invocation = call.invocation
        try:
            request = http_functions.request(invocation, call.payload, os.environ,
                                             time.time())
        except http_functions.Refused as exc:
            done(call.invocation_id, None, {"code": ErrorCode.HTTP_ERROR, "message": str(exc)})
            return
        if self._session is None:
            # No cookies kept between calls of different functions; no env proxies.
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        try:
            async with self._session.request(
                    request.method, request.url, data=request.body, headers=request.headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=call.timeout_ms / 1000)) as response:
                body = await response.content.read(http_functions.MAX_RESPONSE_BYTES + 1)
                status = response.status
        except TimeoutError:
            done(call.invocation_id, None, {
                "code": ErrorCode.TIMEOUT,
                "message": f"{invocation.method} {invocation.url} did not answer within "
                           f"{call.timeout_ms} ms"})
            return
        except (aiohttp.ClientError, ValueError) as exc:
            done(call.invocation_id, None, {
                "code": ErrorCode.HTTP_ERROR,
                "message": f"{invocation.method} {invocation.url}: "
                           f"{type(exc).__name__}: {exc}"})
            return
        except Exception as exc:  # a bug must still answer the caller, not strand it
            log.exception("calling %s failed", invocation.url)
            done(call.invocation_id, None, {
                "code": ErrorCode.INVOCATION_FAILED,
                "message": f"{invocation.method} {invocation.url}: {exc}"})
            return
        if len(body) > http_functions.MAX_RESPONSE_BYTES:
            done(call.invocation_id, None, {
                "code": ErrorCode.HTTP_ERROR, "message": f"the response is larger than "
                f"{http_functions.MAX_RESPONSE_BYTES} bytes"})
            return
        result, error = http_functions.outcome(status, body)
        done(call.invocation_id, result, error)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
