"""``python -m iii_daemon``: the daemon in the foreground, logging to stderr."""

from __future__ import annotations

import argparse
import logging
import sys

from iii_daemon import __version__
from iii_daemon.daemon import DaemonConfig, run
from iii_daemon.unix_listener import StartupError
from iii_sdk.paths import resolve_data_dir, resolve_socket_path
from iii_sdk.protocol import DEFAULT_MAX_FRAME_BYTES


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
    parser.add_argument("--ws-port", type=_port, default=49134,
                        help="WebSocket port, 0 for none (the listener is not built yet)")
    parser.add_argument("--http-port", type=_port, default=3111,
                        help="HTTP trigger port, 0 for none (the listener is not built yet)")
    parser.add_argument("--max-frame-bytes", type=_positive, default=DEFAULT_MAX_FRAME_BYTES)
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"iii daemon {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = DaemonConfig(
        socket_path=resolve_socket_path(args.socket),
        data_dir=resolve_data_dir(args.data_dir),
        max_frame_bytes=args.max_frame_bytes,
        ws_port=args.ws_port,
        http_port=args.http_port,
    )
    try:
        run(config)
    except StartupError as exc:
        print(f"iii daemon: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"iii daemon: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
