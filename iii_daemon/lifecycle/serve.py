"""Serving: take the socket and the data dir, run the core and its drivers until told to
stop, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iii_daemon import __version__
from iii_daemon.core.effects import Kill, LogNote, SharedOp, Spawn
from iii_daemon.core.errors import ListenerOff, StartupError, StoreError
from iii_daemon.core.router import Router
from iii_daemon.core.shared import SharedOps
from iii_daemon.drivers import unix_listener
from iii_daemon.drivers.access import AccessPolicy
from iii_daemon.drivers.channels import Channels
from iii_daemon.drivers.doorkeeper import Doorkeeper
from iii_daemon.drivers.hub import Hub
from iii_daemon.drivers.processes import Processes
from iii_daemon.drivers.store import Store
from iii_daemon.drivers.store_writer import StoreWriter
from iii_daemon.lifecycle import collector, data_lock, directories, pidfile
from iii_sdk.bridge_specs import BridgeSpec
from iii_sdk.client.addresses import without_password
from iii_sdk.limits import DEFAULT_MAX_FRAME_BYTES
from iii_sdk.listener_specs import ListenerSpec, StreamSocketSpec
from iii_sdk.worker_specs import WorkerSpec

if TYPE_CHECKING:
    from websockets.asyncio.server import Server as WsServer

    from iii_daemon.drivers.bridge import Bridge

log = logging.getLogger("iii_daemon")

#: How long stopping waits for WebSocket peers to close; one that does not answer (a
#: TCP connection that never sent its handshake) is left to the process exit.
WS_CLOSE_WAIT_S = 1.0


@dataclass(slots=True)
class DaemonConfig:
    socket_path: Path
    data_dir: Path
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    #: Listener ports; 0 turns a listener off.
    ws_port: int = 49134
    ws_host: str = "127.0.0.1"
    #: Required as ``Authorization: Bearer TOKEN``; needed to bind a non-loopback host.
    ws_token: str | None = None
    #: Browser origins allowed to open a WebSocket (none by default: SDKs send no Origin).
    ws_allowed_origins: tuple[str, ...] = ()
    #: Host names accepted besides loopback names and the listening address.
    ws_allowed_hosts: tuple[str, ...] = ()
    #: The HTTP trigger listener (``[http]``); port 0 turns it off.
    http_port: int = 3111
    http_host: str = "127.0.0.1"
    http_token: str | None = None
    http_max_body_bytes: int = 64 * 1024 * 1024
    #: Browser origins that may call http triggers (and get CORS headers).
    http_cors_origins: tuple[str, ...] = ()
    http_allowed_hosts: tuple[str, ...] = ()
    #: Events kept for engine::events::list (config [history] events).
    history_events: int = 10_000
    #: How long the daemon tracks a call that set no timeout_ms (void calls, trigger
    #: firings, calls of SDKs that only time out locally).
    call_timeout_ms: int = 300_000

    @property
    def write_limit(self) -> int:
        # One largest frame plus slack may sit unsent; more means the peer is not reading.
        return self.max_frame_bytes + 16 * 1024 * 1024

    #: Bytes all connections together may hold in frames still arriving; None: the
    #: larger of 256 MiB and two largest frames.
    max_parked_bytes: int | None = None
    #: ``[queues.NAME]`` tables (validated), by queue name.
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Environment variables HTTP-invoked functions' auth may name (``[http_functions]``).
    http_allowed_env: tuple[str, ...] = ()
    #: Keep the store in memory (application tests: nothing survives the daemon).
    store_in_memory: bool = False
    #: Managed workers (config ``[[workers]]``), started once the daemon is ready.
    workers: tuple[WorkerSpec, ...] = ()
    #: Where their logs go (None: ``<data dir>/logs/workers``).
    worker_log_dir: Path | None = None
    #: Redis, shared with other daemons (``[redis] url``, ``--redis-url``), and its
    #: password when not in the URL.
    redis_url: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    #: Extra worker listeners where an auth function decides (``[[websocket.listeners]]``).
    ws_listeners: tuple[ListenerSpec, ...] = ()
    #: Another iii engine to connect to (``[bridge]``), and the token it takes.
    bridge: BridgeSpec | None = None
    bridge_token: str | None = field(default=None, repr=False)
    #: Where state values and stream items live (``[state] backend``, ``[streams]
    #: backend``): "local", "redis" or "bridge".
    state_backend: str = "local"
    streams_backend: str = "local"
    #: The stream socket (``[streams] port``), where clients join streams; None: off.
    stream_socket: StreamSocketSpec | None = None

    @property
    def parked_limit(self) -> int:
        if self.max_parked_bytes is not None:
            return self.max_parked_bytes
        return max(256 * 1024 * 1024, 2 * self.max_frame_bytes)


async def serve(config: DaemonConfig, stop: asyncio.Event,
                ready: Callable[[], None] | None = None) -> None:
    """Run the daemon until ``stop`` is set.

    Raises:
        StartupError: the socket cannot be taken (another daemon, bad path).
    """
    # Everything the daemon creates (store, pidfile, logs) is private to the user.
    os.umask(0o077)
    directories.prepare_directory(config.socket_path)
    directories.prepare_private_directory(config.data_dir, "data directory")
    socket_lock = pidfile.acquire_pidfile(config.socket_path)
    dir_lock = None
    try:
        # An in-memory store writes nothing there: application tests may share one.
        if not config.store_in_memory:
            dir_lock = data_lock.acquire(config.data_dir, config.socket_path)
        try:
            store = Store(None if config.store_in_memory else config.data_dir / "iii.db")
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        try:
            await _serve_with_store(config, store, stop, ready)
        finally:
            store.close()
    finally:
        if dir_lock is not None:
            dir_lock.close()
        pidfile.release_pidfile(config.socket_path, socket_lock)


async def _serve_with_store(config: DaemonConfig, store: Store, stop: asyncio.Event,
                            ready: Callable[[], None] | None) -> None:
    loop = asyncio.get_running_loop()
    channels = Channels()
    info = _info(config)
    shared = None
    if config.redis_url:
        shared = SharedOps(without_password(config.redis_url))
        in_redis = [space for space, backend in (("state", config.state_backend),
                                                 ("streams", config.streams_backend))
                    if backend == "redis"]
        info["backend"] = {"kind": "redis", "url": shared.describe, "state": "connecting",
                           "shares": ["pub/sub", *in_redis, "queues", "cron"]}
    router = Router(info=info, history=config.history_events,
                    call_timeout_ms=config.call_timeout_ms, queues=config.queues,
                    paced_queues=True, channels=channels,
                    http_allowed_env=frozenset(config.http_allowed_env), shared=shared,
                    state_backend=config.state_backend, streams_backend=config.streams_backend)
    hub = Hub(router, loop, config.write_limit, config.parked_limit)
    bridge = None
    if config.bridge is not None:
        from iii_daemon.drivers.bridge import Bridge

        info["bridge"] = {}
        bridge = Bridge(hub, config.bridge, config.bridge_token, config.max_frame_bytes,
                        info["bridge"], state_bridged=config.state_backend == "bridge",
                        streams_bridged=config.streams_backend == "bridge")
    redis = None
    if config.redis_url:
        from iii_daemon.drivers.shared_redis import RedisShared

        redis = RedisShared(hub, config.redis_url, config.redis_password, info["backend"])
        await redis.open()  # StartupError: one line, exit 1
        hub.commands[SharedOp] = redis.carry
    try:
        await _serve_with_hub(config, store, stop, ready, router, hub, channels, bridge)
    finally:
        if redis is not None:
            await redis.close()


async def _serve_with_hub(config: DaemonConfig, store: Store, stop: asyncio.Event,
                          ready: Callable[[], None] | None, router: Router, hub: Hub,
                          channels: Channels, bridge: Bridge | None = None) -> None:
    loop = hub.loop
    # Reads happen once, here; from now on only the writer thread touches the store.
    try:
        stored = store.load()
    except StoreError as exc:
        raise StartupError(str(exc)) from None
    hub.writes.writer = StoreWriter(store,
                                    lambda: loop.call_soon_threadsafe(hub.writes.landed))
    try:
        hub.deliver(router.start(time.monotonic(), time.time(), stored))
        hub.flush()
        del stored  # restored into the router: the rows themselves can go
        if bridge is not None:  # before any listener: its names are its own from the start
            bridge.start()
            await bridge.first_try()
        # The Unix socket comes up last: once it answers, every listener is ready (the
        # CLI and tests take an answering socket to mean a ready daemon).
        ws_server = await _start_ws(hub, config, router.info["listeners"], channels)
        doorkeeper = Doorkeeper(hub)
        extra_servers = await _start_rbac(hub, doorkeeper, config, router.info["listeners"])
        stream_server = await _start_stream_socket(hub, doorkeeper, config,
                                                   router.info["listeners"])
        if stream_server is not None:
            extra_servers.append(stream_server)
        close_http = await _start_http(hub, config, router.info["listeners"], channels)
        try:
            sock = unix_listener.bind_socket(config.socket_path)
            server = await unix_listener.start_unix_server(hub, sock, config.max_frame_bytes)
        except BaseException:
            if ws_server is not None:
                ws_server.close()
            if close_http is not None:
                await close_http()
            raise
        log.info("listening on %s", config.socket_path)
        processes = _start_processes(hub, config)
        if ready is not None:
            ready()
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            # Managed workers go first, while their calls can still be answered.
            try:
                await processes.stop_all()
            except Exception:  # the rest of the stop must happen all the same
                log.exception("stopping the managed workers failed")
            processes.close()
            if bridge is not None:  # its waiting callers are answered below
                await bridge.close()
            for extra_server in extra_servers:
                extra_server.close()
            server.close()
            # Every waiting caller, on any transport, gets its answer first (writes
            # queued by then are committed).
            hub.shutdown()
            await hub.close_http_caller()
            if close_http is not None:
                await close_http()
            unix_listener.remove_socket(config.socket_path)
            await _drain(hub)
            for link in list(hub.links.values()):
                link.abort()  # still not drained: a client that does not read
            if ws_server is not None:
                # What is left (channel ends, telemetry sockets) hears 1012 too.
                ws_server.close(code=1012, reason="service restart")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ws_server.wait_closed(), WS_CLOSE_WAIT_S)
    finally:
        hub.writes.writer.close()


async def _start_http(hub: Hub, config: DaemonConfig, listeners: dict[str, Any],
                      channels: Channels) -> Callable[[], Awaitable[None]] | None:
    """The HTTP trigger listener, if configured; when it cannot run, the daemon still
    serves everything else and ``status`` says why."""
    if not config.http_port:
        return None
    # Imported only when on: aiohttp costs a daemon a tenth of a second of start-up.
    from iii_daemon.drivers.http_listener import HttpConfig, HttpListener, start_http_server

    listener = HttpListener(hub, channels, HttpConfig(
        host=config.http_host, port=config.http_port,
        max_body_bytes=config.http_max_body_bytes, cors_origins=config.http_cors_origins,
        token=config.http_token, allowed_hosts=config.http_allowed_hosts))
    try:
        close = await start_http_server(listener)
    except ListenerOff as exc:
        log.warning("HTTP listener off: %s", exc)
        listeners["http"] = {"state": "off", "port": config.http_port, "reason": str(exc)}
        return None
    log.info("listening on http://%s:%d", config.http_host, config.http_port)
    listeners["http"] = {"state": "on", "host": config.http_host, "port": config.http_port,
                         "url": f"http://{_url_host(config.http_host)}:{config.http_port}",
                         "token": bool(config.http_token)}
    return close


def _start_processes(hub: Hub, config: DaemonConfig) -> Processes:
    """The driver of managed workers: what a daemon that died left running is stopped,
    then the config's workers start (each gets ``III_SOCKET`` of this daemon)."""
    processes = Processes(hub, _worker_log_dir(config),
                          config.data_dir / "managed.json",
                          {"III_SOCKET": str(config.socket_path)})
    processes.clear_leftovers()
    for kind in (Spawn, Kill, LogNote):
        hub.commands[kind] = processes.carry
    hub.deliver(hub.router.start_managed(list(config.workers), time.monotonic()))
    hub.flush()
    return processes


def _worker_log_dir(config: DaemonConfig) -> Path:
    return config.worker_log_dir or config.data_dir / "logs" / "workers"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _start_ws(hub: Hub, config: DaemonConfig, listeners: dict[str, Any],
                    channels: Channels) -> WsServer | None:
    """The WebSocket listener, if configured; when it cannot run, the daemon still serves
    its Unix socket and ``status`` says why."""
    if not config.ws_port:
        return None
    from iii_daemon.drivers import ws_listener  # only when on, as aiohttp above

    policy = AccessPolicy("websocket", config.ws_host, config.ws_token,
                          frozenset(config.ws_allowed_origins),
                          frozenset(config.ws_allowed_hosts))
    try:
        ws = await ws_listener.start_ws_server(hub, policy, config.ws_port,
                                               config.max_frame_bytes, channels)
    except ListenerOff as exc:
        log.warning("WebSocket listener off: %s", exc)
        listeners["websocket"] = {"state": "off", "port": config.ws_port, "reason": str(exc)}
        return None
    log.info("listening on ws://%s:%d", config.ws_host, config.ws_port)
    channels.base_url = f"ws://{_url_host(config.ws_host)}:{config.ws_port}"
    listeners["websocket"] = {"state": "on", "host": config.ws_host, "port": config.ws_port,
                              "url": channels.base_url, "token": bool(config.ws_token)}
    return ws


async def _start_stream_socket(hub: Hub, doorkeeper: Doorkeeper, config: DaemonConfig,
                               listeners: dict[str, Any]) -> WsServer | None:
    """The stream socket (``[streams] port``); when it cannot run, the daemon still
    serves everything else and ``status`` says why."""
    spec = config.stream_socket
    if spec is None:
        return None
    from iii_daemon.drivers.stream_socket import StreamSocket

    try:
        server = await StreamSocket(hub, doorkeeper, spec).start()
    except ListenerOff as exc:
        log.warning("stream socket off: %s", exc)
        listeners["streams"] = {"state": "off", "port": spec.port, "reason": str(exc)}
        return None
    log.info("stream socket on ws://%s:%d", _url_host(spec.host), spec.port)
    listeners["streams"] = {"state": "on", "host": spec.host, "port": spec.port,
                            "url": f"ws://{_url_host(spec.host)}:{spec.port}",
                            "auth_function_id": spec.auth_function_id}
    return server


async def _start_rbac(hub: Hub, doorkeeper: Doorkeeper, config: DaemonConfig,
                      listeners: dict[str, Any]) -> list[WsServer]:
    """The RBAC worker listeners (``[[websocket.listeners]]``); one that cannot run is
    off, and ``status`` says why."""
    if not config.ws_listeners:
        return []
    from iii_daemon.drivers.rbac_listener import start_rbac_server

    servers = []
    for spec in config.ws_listeners:
        name = f"rbac {spec.host}:{spec.port}"
        try:
            servers.append(await start_rbac_server(hub, doorkeeper, spec,
                                                   config.max_frame_bytes))
        except ListenerOff as exc:
            log.warning("RBAC listener off: %s", exc)
            listeners[name] = {"state": "off", "port": spec.port, "reason": str(exc)}
            continue
        log.info("listening on ws://%s:%d (RBAC: %s decides)", spec.host, spec.port,
                 spec.auth_function_id)
        listeners[name] = {"state": "on", "host": spec.host, "port": spec.port,
                           "auth_function_id": spec.auth_function_id}
    return servers


def _info(config: DaemonConfig) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "version": __version__,
        "started_at": time.time(),
        "socket": str(config.socket_path),
        "data_dir": str(config.data_dir),
        "backend": {"kind": "sqlite", "path": str(config.data_dir / "iii.db")},
        "worker_log_dir": str(_worker_log_dir(config)),
        # Filled in as listeners start.
        "listeners": {
            "websocket": {"state": "off", "port": config.ws_port, "reason": "disabled"},
            "http": {"state": "off", "port": config.http_port, "reason": "disabled"},
        },
    }


async def _drain(hub: Hub, timeout: float = 2.0) -> None:
    """Give closing links a moment to send what is buffered (their last answers)."""
    deadline = hub.loop.time() + timeout
    while hub.links and hub.loop.time() < deadline:
        await asyncio.sleep(0.01)


def new_runner() -> asyncio.Runner:
    """A runner on uvloop when it is installed (plain asyncio works, only slower); the
    daemon's process and the in-process daemon of tests both use it."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def run(config: DaemonConfig) -> None:
    """Serve in the foreground until SIGTERM or SIGINT (what ``python -m iii_daemon`` does)."""
    with new_runner() as runner:
        runner.run(_serve_until_signalled(config))


async def _serve_until_signalled(config: DaemonConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The collector is the process's: set only where the daemon owns it, never in a
    # process that embeds it (tests, iii_sdk.testing), whose later garbage it would freeze.
    await serve(config, stop, collector.settle)
