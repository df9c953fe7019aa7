"""``python -m iii_daemon``: the daemon in the foreground, logging to stderr."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import socket
import sys
from pathlib import Path
from typing import Any

from iii_daemon import __version__
from iii_daemon.core.errors import StartupError
from iii_daemon.core.queues import policy_problem
from iii_daemon.lifecycle.serve import DaemonConfig, run
from iii_sdk import bridge_specs, config, listener_specs
from iii_sdk.bridge_specs import BridgeSpec
from iii_sdk.client.addresses import is_loopback
from iii_sdk.listener_specs import StreamSocketSpec
from iii_sdk.paths import resolve_data_dir, resolve_socket_path
from iii_sdk.worker_specs import spec_of


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m iii_daemon",
                                     description="Run the iii daemon in the foreground.")
    parser.add_argument("--socket", help="Unix socket path (default: $III_SOCKET, "
                                         "else iii.sock in the user runtime dir)")
    parser.add_argument("--data-dir", help="data directory (default: $III_DATA_DIR, "
                                           "else the user data dir)")
    parser.add_argument("--ws-port", type=_port,
                        help="WebSocket port, 0 for none (default: $III_WS_PORT, "
                             "else config [websocket] port)")
    parser.add_argument("--http-port", type=_port,
                        help="HTTP trigger port, 0 for none (default: $III_HTTP_PORT, else "
                             "config [http] port)")
    parser.add_argument("--streams-port", type=_port,
                        help="stream socket port, where browsers join streams (3112 "
                             "upstream), 0 for none (default: $III_STREAMS_PORT, else "
                             "config [streams] port, else off)")
    parser.add_argument("--redis-url",
                        help="share pub/sub with other daemons through this Redis "
                             "(redis://HOST:PORT/DB, rediss:// for TLS; default: "
                             "$III_REDIS_URL, else config [redis] url)")
    parser.add_argument("--max-frame-bytes", type=_positive)
    parser.add_argument("--max-parked-bytes", type=_positive,
                        help="bytes all clients together may hold in unfinished frames "
                             "(default: 256 MiB or twice --max-frame-bytes)")
    parser.add_argument("--log-file", help="log here (rotated) instead of to stderr")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"iii daemon {__version__}")
    return parser.parse_args(argv)


def _setup_logging(level: str, log_file: str | None) -> None:
    handler: logging.Handler
    if log_file:
        path = Path(log_file)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=5 * 1024 * 1024,
                                                       backupCount=3)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


class ConfigProblem(Exception):
    """The flags, environment or config file cannot make a daemon (one line, exit 1)."""


def daemon_config(args: argparse.Namespace) -> DaemonConfig:
    """What the flags, the environment and the config file ask for, flag first.

    Raises:
        ConfigProblem: a value is invalid.
    """
    try:
        settings = config.load()
    except config.ConfigError as exc:
        raise ConfigProblem(f"config error: {exc}") from None
    for warning in settings.warnings:
        logging.getLogger("iii_daemon").warning("%s", warning)
    values = settings.values

    def pick(flag: int | None, key: str) -> int:
        """Flag > environment (validated as the file is) > config file > default."""
        if flag is not None:
            return flag
        from_env = config.env_value(key)
        return int(settings.get(key) if from_env is None else from_env)

    try:
        ws_port = pick(args.ws_port, "websocket.port") \
            if values["websocket"]["enabled"] else 0
        http_port = pick(args.http_port, "http.port") if values["http"]["enabled"] else 0
        streams_port = pick(args.streams_port, "streams.port")
    except config.ConfigError as exc:
        raise ConfigProblem(f"config error: {exc}") from None
    try:
        redis_url = args.redis_url or config.env_value("redis.url") or settings.get("redis.url")
    except config.ConfigError as exc:
        raise ConfigProblem(f"config error: {exc}") from None
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigProblem("config error: the Redis URL must start with redis://, rediss:// "
                            "or unix://")
    bridge, bridge_token = _bridge(values.get("bridge"), settings.path)
    state_backend = _backend("state", settings.get("state.backend"), redis_url, bridge)
    streams_backend = _backend("streams", settings.get("streams.backend"), redis_url, bridge)
    queues: dict[str, dict[str, Any]] = values.get("queues") or {}
    for name, table in queues.items():
        problem = policy_problem(table, f"[queues.{name}]")
        if problem:
            raise ConfigProblem(f"config error: {settings.path}: {problem}")
    return DaemonConfig(
        socket_path=resolve_socket_path(args.socket, values["socket"] or ""),
        data_dir=resolve_data_dir(args.data_dir),
        max_frame_bytes=pick(args.max_frame_bytes, "max_frame_bytes"),
        ws_port=ws_port,
        ws_host=str(settings.get("websocket.host")),
        ws_token=settings.get("websocket.token"),
        ws_allowed_origins=tuple(settings.get("websocket.allowed_origins")),
        ws_allowed_hosts=tuple(settings.get("websocket.allowed_hosts")),
        http_port=http_port,
        http_host=str(settings.get("http.host")),
        http_token=settings.get("http.token"),
        http_max_body_bytes=int(settings.get("http.max_body_bytes")),
        http_cors_origins=tuple(settings.get("http.cors_origins")),
        http_allowed_hosts=tuple(settings.get("http.allowed_hosts")),
        history_events=int(settings.get("history.events")),
        call_timeout_ms=int(settings.get("call_timeout_ms")),
        max_parked_bytes=args.max_parked_bytes,
        queues=queues,
        http_allowed_env=tuple(settings.get("http_functions.allowed_env")),
        redis_url=redis_url,
        redis_password=_redis_password(settings.get("redis.password_env"), settings.path),
        workers=tuple(spec_of(entry) for entry in values.get("workers") or ()),
        ws_listeners=tuple(listener_specs.spec_of(entry)
                           for entry in values["websocket"].get("listeners") or ()),
        bridge=bridge,
        bridge_token=bridge_token,
        state_backend=state_backend,
        streams_backend=streams_backend,
        worker_log_dir=_worker_log_dir(args.log_file),
        stream_socket=_stream_socket(streams_port, settings),
    )


def _stream_socket(port: int, settings: config.Config) -> StreamSocketSpec | None:
    """The stream socket, when it has a port.

    Raises:
        ConfigProblem: it would listen off this machine with no auth function to decide
            who joins (every listener off loopback needs a door).
    """
    if not port:
        return None
    host = str(settings.get("streams.host"))
    auth = settings.get("streams.auth_function_id")
    if auth is None and not is_loopback(host):
        raise ConfigProblem(f"config error: {settings.path}: [streams] host {host} is not "
                            f"loopback; set [streams] auth_function_id to decide who joins")
    return StreamSocketSpec(
        port=port, host=host, auth_function_id=auth,
        allowed_origins=tuple(settings.get("streams.allowed_origins")),
        allowed_hosts=tuple(settings.get("streams.allowed_hosts")),
        max_subscriptions=int(settings.get("streams.max_subscriptions")),
        max_clients=int(settings.get("streams.max_clients")),
        client_buffer_bytes=int(settings.get("streams.client_buffer_bytes")))


def _bridge(table: dict[str, Any] | None, path: Path) -> tuple[BridgeSpec | None, str | None]:
    """The bridge (valid: the config file's check ran) and its token.

    Raises:
        ConfigProblem: its token variable is not set, or a URL off this machine has no
            token (whoever listens there would hold this daemon's exposed functions).
    """
    if not table:
        return None, None
    spec = bridge_specs.spec_of(table, socket.gethostname())
    token = None
    if spec.token_env is not None:
        token = os.environ.get(spec.token_env)
        if not token:
            raise ConfigProblem(f"config error: {path}: [bridge] token_env names "
                                f"${spec.token_env}, which is not set")
    if token is None and not bridge_specs.on_this_machine(spec.url):
        raise ConfigProblem(f"config error: {path}: [bridge] url {spec.url} is not on this "
                            f"machine; a bridge that leaves it needs a token "
                            f"([bridge] token_env)")
    return spec, token


def _backend(space: str, chosen: str | None, redis_url: str | None,
             bridge: BridgeSpec | None) -> str:
    """Where ``space`` ("state", "streams") lives: unset follows the daemon."""
    if chosen is None:
        return "redis" if redis_url else "local"
    if chosen == "redis" and not redis_url:
        raise ConfigProblem(f"config error: [{space}] backend is redis, but no Redis URL is "
                            f"set (--redis-url, $III_REDIS_URL or [redis] url)")
    if chosen == "bridge" and bridge is None:
        raise ConfigProblem(f"config error: [{space}] backend is bridge, but there is no "
                            f"[bridge] url")
    return chosen


def _redis_password(variable: str | None, path: Path) -> str | None:
    """The password ``[redis] password_env`` names, read from the environment."""
    if not variable:
        return None
    value = os.environ.get(variable)
    if not value:
        raise ConfigProblem(f"config error: {path}: [redis] password_env names ${variable}, "
                            "which is not set")
    return value


def _worker_log_dir(log_file: str | None) -> Path:
    """Where managed workers' logs go: ``$III_LOG_DIR``, else beside the daemon's log
    file, else the user log dir; in ``workers/``."""
    from_env = os.environ.get("III_LOG_DIR")
    if from_env:
        return Path(from_env).expanduser() / "workers"
    if log_file:
        return Path(log_file).expanduser().parent / "workers"
    import platformdirs

    return Path(platformdirs.user_log_dir("iii")) / "workers"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _setup_logging(args.log_level, args.log_file)
    try:
        wanted = daemon_config(args)
    except ConfigProblem as exc:
        print(f"iii daemon: {exc}", file=sys.stderr)
        return 1
    try:
        run(wanted)
    except StartupError as exc:
        print(f"iii daemon: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"iii daemon: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
