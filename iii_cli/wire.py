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


class Connection:
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

    def call(self, function_id: str, data: Any = None, *, timeout_ms: int | None = None,
             action: dict[str, Any] | None = None,
             invocation_id: str = "cli-1") -> dict[str, Any]:
        """Send one call and return its ``invocationresult``."""
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

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
