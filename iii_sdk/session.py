"""The connection to the daemon and the thread that runs it.

A background thread runs the SDK's event loop, so plain scripts work. The session
connects (Unix socket or WebSocket), backs off while the daemon is away, reconnects
when the link drops, and asks the daemon to retire the previous connection first
(reattach) so that what the rest of the SDK replays does not collide with it.

Threading rule: everything that touches the link runs on the SDK loop; other threads
hand work to it with :meth:`Session.call_on_loop`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

from iii_sdk import protocol as p
from iii_sdk.client.addresses import BadAddress, parse
from iii_sdk.client_link import ClientLink, WsClientLink, open_ws_link
from iii_sdk.errors import ConnectionFailed
from iii_sdk.options import InitOptions, ReconnectionConfig
from iii_sdk.tokens import with_token

log = logging.getLogger("iii_sdk")

#: A connection that lasted this long resets the reconnect backoff.
STABLE_CONNECTION_S = 5.0

Link = ClientLink | WsClientLink


def backoff_s(config: ReconnectionConfig, attempt: int) -> float:
    """Seconds before connection attempt ``attempt + 1``: doubling, capped, jittered."""
    delay = min(config.initial_delay_ms * config.backoff_multiplier ** attempt,
                config.max_delay_ms)
    delay += delay * config.jitter_factor * (2 * random.random() - 1)
    return max(delay, 0) / 1000


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # optional speed-up
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class Session:
    def __init__(self, address: str, options: InitOptions,
                 on_message: Callable[[p.Message], None],
                 on_connected: Callable[[Link], None], on_lost: Callable[[], None],
                 on_gave_up: Callable[[], None]) -> None:
        """Callbacks run on the SDK loop: ``on_connected(link)`` after each (re)connect,
        before anyone is told the session is connected; ``on_lost()`` when the link
        dropped; ``on_gave_up()`` when ``max_retries`` ran out."""
        try:
            where = parse(address)
        except BadAddress:
            raise ConnectionFailed(
                f"unsupported address {address!r}: use a Unix socket path, a unix:// URL "
                "or a ws:// URL") from None
        self.ws_url = where.target if where.kind == "ws" else None
        self.socket_path = Path(where.target) if where.kind == "unix" else None
        self.address = address
        self.options = options
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_lost = on_lost
        self._on_gave_up = on_gave_up
        self.link: Link | None = None
        #: What the daemon called this connection (kept across reconnects to reattach).
        self.worker_id: str | None = None
        self._reattach_token: str | None = None
        self.running = True
        self.connected = threading.Event()
        self._ever_warned = False
        self.loop = _new_loop()
        self._connector: asyncio.Task[None] | None = None
        self.thread = threading.Thread(target=self._run_loop, name="iii-sdk", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.loop.call_soon_threadsafe(self._start_connector)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _start_connector(self) -> None:
        self._connector = self.loop.create_task(self._connect_forever())

    # --- threads --------------------------------------------------------------------------

    def on_sdk_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def call_on_loop(self, fn: Callable[[], None]) -> None:
        if threading.current_thread() is self.thread:
            fn()
        else:
            self.loop.call_soon_threadsafe(fn)

    # --- the link ---------------------------------------------------------------------------

    def send(self, message: p.Message) -> bool:
        """Write now if connected (on the loop). False when not connected."""
        link = self.link
        if link is None:
            return False
        link.send(message)
        return True

    def welcome(self, message: p.WorkerRegistered) -> None:
        self.worker_id = message.worker_id
        self._reattach_token = message.reattach_token

    async def _connect_forever(self) -> None:
        config = self.options.reconnection_config
        attempt = 0
        while self.running:
            lost = asyncio.Event()
            try:
                link = await self._open_link(lost.set)
            except OSError as exc:
                if config.max_retries != -1 and attempt >= config.max_retries:
                    log.error("giving up on %s after %d attempts", self.address, attempt)
                    self._on_gave_up()
                    return
                if not self._ever_warned:
                    log.warning("iii daemon not reachable at %s (%s); start it with "
                                "`iii daemon start`; retrying", self.address,
                                exc.strerror or exc)
                    self._ever_warned = True
                await asyncio.sleep(backoff_s(config, attempt))
                attempt += 1
                continue
            opened = self.loop.time()
            self._connected(link)
            await lost.wait()
            self.link = None
            self.connected.clear()
            self._on_lost()
            if self.running:
                log.warning("lost the connection to %s; reconnecting", self.address)
            # Only a connection that stayed up earns a fresh start: one the other end
            # closes at once must not turn into a tight reconnect loop.
            if self.loop.time() - opened >= STABLE_CONNECTION_S:
                attempt = 0
            elif self.running:
                await asyncio.sleep(backoff_s(config, attempt))
                attempt += 1

    async def _open_link(self, on_lost: Callable[[], None]) -> Link:
        """Connect over the address's transport.

        Raises:
            OSError: not reachable (the connect loop retries).
        """
        if self.ws_url is not None:
            return await open_ws_link(self.ws_url, self._on_message, on_lost,
                                      self.options.max_frame_bytes,
                                      with_token(self.options.headers))
        assert self.socket_path is not None
        _, link = await self.loop.create_unix_connection(
            functools.partial(ClientLink, self._on_message, on_lost,
                              self.options.max_frame_bytes),
            os.fspath(self.socket_path),
        )
        return link

    def _connected(self, link: Link) -> None:
        self.link = link
        # A reconnect first asks the daemon to retire our previous connection, so what
        # is replayed next does not collide with what it still holds.
        if self.worker_id is not None and self._reattach_token is not None:
            link.send(p.Reattach(previous_worker_id=self.worker_id,
                                 reattach_token=self._reattach_token))
        self._on_connected(link)
        self.connected.set()

    # --- the end ----------------------------------------------------------------------------

    async def close_async(self) -> None:
        """Stop reconnecting and close the link (on the loop)."""
        self.running = False
        if self._connector is not None:
            self._connector.cancel()
        link, self.link = self.link, None
        if link is not None:
            await link.aclose()
        if self._connector is not None:
            await asyncio.gather(self._connector, return_exceptions=True)
        self.connected.clear()

    def stop_thread(self) -> None:
        """Stop the loop and join its thread (from another thread, after close)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
