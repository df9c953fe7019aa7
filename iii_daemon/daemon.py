"""Daemon lifecycle: take the socket, serve until told to stop, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iii_daemon import __version__, unix_listener
from iii_daemon.hub import Hub
from iii_daemon.router import Router
from iii_daemon.store import Store, StoreError
from iii_sdk.protocol import DEFAULT_MAX_FRAME_BYTES

log = logging.getLogger("iii_daemon")


@dataclass(slots=True)
class DaemonConfig:
    socket_path: Path
    data_dir: Path
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    #: Listener ports; 0 turns a listener off. Accepted now, served by later listeners.
    ws_port: int = 49134
    http_port: int = 3111

    @property
    def write_limit(self) -> int:
        # One largest frame plus slack may sit unsent; more means the peer is not reading.
        return self.max_frame_bytes + 16 * 1024 * 1024


async def serve(config: DaemonConfig, stop: asyncio.Event,
                ready: Callable[[], None] | None = None) -> None:
    """Run the daemon until ``stop`` is set.

    Raises:
        unix_listener.StartupError: the socket cannot be taken (another daemon, bad path).
    """
    loop = asyncio.get_running_loop()
    unix_listener.prepare_directory(config.socket_path)
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pidfile = unix_listener.acquire_pidfile(config.socket_path)
    try:
        try:
            store = Store(config.data_dir / "iii.db")
        except StoreError as exc:
            raise unix_listener.StartupError(str(exc)) from None
        sock = unix_listener.bind_socket(config.socket_path)
        router = Router(info=_info(config), store=store)
        hub = Hub(router, loop, config.write_limit)
        hub.deliver(router.start(loop.time(), time.time()))
        hub.flush()
        server = await unix_listener.start_unix_server(hub, sock, config.max_frame_bytes)
        log.info("listening on %s", config.socket_path)
        if ready is not None:
            ready()
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            server.close()
            hub.shutdown()
            unix_listener.remove_socket(config.socket_path)
            await _drain(hub)
            store.close()
    finally:
        unix_listener.release_pidfile(config.socket_path, pidfile)


def _info(config: DaemonConfig) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "version": __version__,
        "started_at": time.time(),
        "socket": str(config.socket_path),
        "data_dir": str(config.data_dir),
        # The WebSocket and HTTP listeners are not built yet: say so, with the port asked.
        "listeners": {
            "websocket": {"state": "off", "port": config.ws_port,
                          "reason": "not built yet" if config.ws_port else "port 0"},
            "http": {"state": "off", "port": config.http_port,
                     "reason": "not built yet" if config.http_port else "port 0"},
        },
    }


async def _drain(hub: Hub, timeout: float = 2.0) -> None:
    """Give closing links a moment to send what is buffered (their last answers)."""
    deadline = hub.loop.time() + timeout
    while hub.links and hub.loop.time() < deadline:
        await asyncio.sleep(0.01)


def run(config: DaemonConfig) -> None:
    """Serve in the foreground until SIGTERM or SIGINT (what ``python -m iii_daemon`` does)."""
    try:
        import uvloop
    except ImportError:  # uvloop is optional: plain asyncio works, only slower
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        runner.run(_serve_until_signalled(config))


async def _serve_until_signalled(config: DaemonConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, stop)
