"""The channel ends a worker makes: readers and writers for the refs in a handler's
input or from ``create_channel()``, opened at the daemon's WebSocket listener, and
closed at shutdown if still open (else the daemon would wait on sockets nobody answers
until the process exits)."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from iii_sdk.channels import Channel, ChannelEnd, ChannelReader, ChannelWriter, resolve_refs
from iii_sdk.errors import ConnectionFailed
from iii_sdk.session import Session

#: How long shutdown waits for the ends still open to close.
RELEASE_WAIT_S = 2.0


class ChannelEnds:
    def __init__(self, session: Session, call: Callable[[dict[str, Any]], Awaitable[Any]],
                 headers: dict[str, str] | None) -> None:
        self._session = session
        #: Calls a function from any loop (``engine::status``, to find the listener).
        self._call = call
        self._headers = headers
        #: The daemon's WebSocket listener, where channels are opened (asked once).
        self._base: str | None = None
        self._ends: weakref.WeakSet[ChannelEnd] = weakref.WeakSet()

    def pair(self, refs: dict[str, Any]) -> Channel:
        """The two ends of a channel ``engine::channels::create`` made."""
        writer, reader = self.end(refs["writer"]), self.end(refs["reader"])
        assert isinstance(writer, ChannelWriter) and isinstance(reader, ChannelReader)
        return Channel(writer, reader, refs["writer"], refs["reader"])

    def end(self, ref: dict[str, str]) -> ChannelReader | ChannelWriter:
        kind = ChannelReader if ref["direction"] == "read" else ChannelWriter
        made = kind(self._session.loop, self._base_url, ref, self._headers)
        self._ends.add(made)
        return made

    def resolve(self, data: Any) -> Any:
        """``data`` with every channel ref in it replaced by its reader or writer."""
        return resolve_refs(data, self.end)

    async def _base_url(self) -> str:
        """The base URL channels open at: the engine's own URL over WebSocket; over the
        Unix socket, the daemon's WebSocket listener (asked once, engine::status).

        Raises:
            ConnectionFailed: the daemon's WebSocket listener is off.
        """
        if self._session.ws_url is not None:
            parts = urlsplit(self._session.ws_url)
            return f"{parts.scheme}://{parts.netloc}"
        if self._base is None:
            status = await self._call({"function_id": "engine::status", "payload": {}})
            listener = (status.get("listeners") or {}).get("websocket") or {}
            if listener.get("state") != "on" or not listener.get("url"):
                raise ConnectionFailed(
                    "channels need the daemon's WebSocket listener, which is off ("
                    f"{listener.get('reason', 'unknown reason')}); see iii daemon status")
            self._base = str(listener["url"])
        return self._base

    async def release_all(self) -> None:
        """Close the ends still open, or stop opening them (on the SDK loop)."""
        ends = [end.release() for end in list(self._ends)]
        if ends:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*ends, return_exceptions=True),
                                       RELEASE_WAIT_S)
