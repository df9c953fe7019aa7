"""A small blocking client for one request and its answer.

Used by the ``iii trigger`` fast path, so it imports only ``socket`` and ``json``: no
asyncio, no typer, not even msgspec or pathlib. Measured on the reference machine:
importing msgspec costs ~10 ms and pathlib ~4.5 ms, against ~2 ms for the stdlib json
that one small message per process needs (benchmarks/cli_speed.py).
"""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class Unreachable(Exception):
    """No daemon answers on the socket; the message says why."""


def unreachable_message(exc: Unreachable) -> str:
    """The one line every command prints when no daemon answers."""
    return f"daemon not running: {exc}; start it with `iii daemon start`"


class Timeout(Exception):
    """No answer in time."""


def _why(exc: OSError, path: str | Path) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no daemon socket at {path}"
    if isinstance(exc, ConnectionRefusedError):
        return f"no daemon listening on {path}"
    if isinstance(exc, PermissionError):
        return f"permission denied for {path}"
    if isinstance(exc, TimeoutError):
        return f"the daemon on {path} does not answer"
    return f"cannot connect to {path}: {exc.strerror or exc}"


def new_invocation_id() -> str:
    """A random UUID (version 4), without importing ``uuid``."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Calls:
    """``call`` on top of a transport's ``send`` and ``receive``."""

    def send(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def receive(self) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def call(self, function_id: str, data: Any = None, *, timeout_ms: int | None = None,
             action: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one call and return its ``invocationresult``."""
        invocation_id = new_invocation_id()
        message: dict[str, Any] = {"type": "invokefunction", "function_id": function_id,
                                   "data": data, "invocation_id": invocation_id}
        if timeout_ms is not None:
            message["timeout_ms"] = timeout_ms
        if action is not None:
            message["action"] = action
        self.send(message)
        while True:
            frame = self.receive()
            if frame.get("type") == "invocationresult" and \
                    frame.get("invocation_id") == invocation_id:
                return frame

    def __enter__(self) -> Calls:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Connection(Calls):
    """The daemon's Unix socket."""

    def __init__(self, path: str | Path, timeout_s: float | None = 10.0) -> None:
        self.path = path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(os.fspath(path))
        except OSError as exc:
            sock.close()
            raise Unreachable(_why(exc, path)) from None
        self.sock = sock
        self._buf = b""

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(_encode(message) + b"\n")

    def receive(self) -> dict[str, Any]:
        """The next frame as a dict.

        Raises:
            Unreachable: the daemon closed the connection.
            Timeout: nothing came within the socket's timeout.
        """
        while b"\n" not in self._buf:
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                raise Timeout() from None
            except OSError as exc:
                raise Unreachable(f"the daemon on {self.path} closed the connection: {exc}"
                                  ) from None
            if not chunk:
                raise Unreachable(f"the daemon on {self.path} closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        value: dict[str, Any] = json.loads(line)
        return value

    def close(self) -> None:
        self.sock.close()


class WsConnection(Calls):
    """A WebSocket URL: our daemon's listener or an iii engine. Imports websockets (only
    on this path)."""

    def __init__(self, url: str, timeout_s: float | None = 10.0) -> None:
        from websockets.exceptions import InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        headers = {}
        token = os.environ.get("III_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url
        self.timeout_s = timeout_s
        try:
            self.ws = connect(url, open_timeout=timeout_s, compression=None, max_size=None,
                              additional_headers=headers).__enter__()  # closed by close()
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise Unreachable(f"no iii engine at {url} ({exc})") from None

    def send(self, message: dict[str, Any]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self.ws.send(_encode(message).decode())
        except ConnectionClosed:
            raise Unreachable(f"{self.url} closed the connection") from None

    def receive(self) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        try:
            frame = self.ws.recv(timeout=self.timeout_s)
        except TimeoutError:
            raise Timeout() from None
        except ConnectionClosed:
            raise Unreachable(f"{self.url} closed the connection") from None
        value: dict[str, Any] = json.loads(frame)
        return value

    def close(self) -> None:
        self.ws.close()


def connect(target: str, timeout_s: float | None = 10.0) -> Calls:
    """A Unix socket path, or a ws:// / wss:// URL."""
    if target.startswith(("ws://", "wss://")):
        return WsConnection(target, timeout_s)
    return Connection(target, timeout_s)
