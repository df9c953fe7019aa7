"""The blocking client: one request and its answer, within one deadline.

Used by the ``iii trigger`` fast path, so it imports only ``socket`` and ``json``: no
asyncio, no typer, not even msgspec or pathlib. Measured on the reference machine:
importing msgspec costs ~10 ms and pathlib ~4.5 ms, against ~2 ms for the stdlib json
that one small message per process needs (benchmarks/cli_speed.py).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from iii_sdk.client.addresses import parse
from iii_sdk.errors import Broken, Closed, Lost, Refused, Timeout, Unreachable
from iii_sdk.limits import DEFAULT_MAX_REPLY, GREETING_TIMEOUT_S
from iii_sdk.tokens import with_token

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()







def unreachable_message(exc: Unreachable, socket_flag: str | None = None) -> str:
    """The one line every command prints when no daemon answers; the hint names the
    socket when the command was given one with ``--socket``."""
    if isinstance(exc, Broken):
        return str(exc)
    start = f"iii daemon start --socket {socket_flag}" if socket_flag else "iii daemon start"
    return f"daemon not running: {exc}; start it with `{start}`"



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
    """``call`` on top of a transport's ``send`` and ``receive``, and the one deadline
    the whole exchange has."""

    deadline: float | None = None

    def _start_clock(self, timeout_s: float | None) -> None:
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def _time_left(self) -> float | None:
        """Seconds until the deadline, None without one.

        Raises:
            Timeout: it has passed.
        """
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Timeout()
        return left

    def send(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def send_frames(self, frames: list[bytes]) -> None:
        """Send encoded messages (pipelined calls, no newlines); one write where the
        transport can."""
        raise NotImplementedError

    def _where(self) -> str:
        raise NotImplementedError

    def receive(self) -> dict[str, Any]:
        """The next frame as a dict.

        Raises:
            Broken: the peer closed the connection, or sent a malformed or oversized frame.
            Closed: it closed the connection. Timeout: the exchange's deadline passed.
        """
        return _decode(self.receive_frame(), self._where())

    def receive_frame(self) -> bytes | str:
        """The next frame as it came (see :meth:`receive`)."""
        raise NotImplementedError

    def receive_frames(self) -> list[bytes | str]:
        """Every frame that has arrived, waiting for the first (pipelined replies: one
        read, many frames)."""
        return [self.receive_frame()]

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
        # A daemon greets a connection at once (workerregistered).
        deadline = self.deadline
        greet_by = time.monotonic() + GREETING_TIMEOUT_S
        if deadline is None or greet_by < deadline:
            self.deadline = greet_by
        heard = False
        while True:
            try:
                frame = self.receive()
            except Timeout:
                if heard:
                    raise
                # Exit 3 (nothing that works there), not a timeout of the call (124).
                raise Broken(f"{self._where()} accepted the connection but never answered "
                             f"like an iii daemon") from None
            except Closed as exc:
                if heard:  # it was there, took the call, and went away
                    raise Lost(str(exc)) from None
                raise
            if not heard:
                heard, self.deadline = True, deadline
            kind = frame.get("type")
            if kind == "invocationresult" and frame.get("invocation_id") == invocation_id:
                return frame
            if kind == "error":  # our one frame was refused (too large, malformed)
                raise Refused(str(frame.get("message")))

    def __enter__(self) -> Calls:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Connection(Calls):
    """The daemon's Unix socket. ``timeout_s`` bounds the whole exchange, connect
    included: a daemon that trickles bytes cannot keep us past it."""

    def __init__(self, path: str | Path, timeout_s: float | None = 10.0,
                 max_reply: int = DEFAULT_MAX_REPLY,
                 configured_limit: Callable[[], int] | None = None) -> None:
        self._start_clock(timeout_s)
        self.path = path
        self.max_reply = max_reply
        #: Asked once, only when a reply outgrows ``max_reply`` (reading the config costs).
        self._configured_limit = configured_limit
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(os.fspath(path))
        except OSError as exc:
            sock.close()
            raise Unreachable(_why(exc, path)) from None
        self.sock = sock
        self._chunks: list[bytes] = []
        self._size = 0

    def send(self, message: dict[str, Any]) -> None:
        """Raises:
            Refused: the daemon closed the connection with an error (frame too large).
            Broken: it closed the connection without saying why.
        """
        try:
            self.sock.sendall(_encode(message) + b"\n")
        except OSError as exc:
            raise self._refusal(exc) from None

    def send_frames(self, frames: list[bytes]) -> None:
        try:
            self.sock.sendall(b"\n".join(frames) + b"\n")
        except OSError as exc:
            raise self._refusal(exc) from None

    def _refusal(self, exc: OSError) -> Exception:
        """The daemon hung up while we were writing: read what it said first, if anything."""
        self._start_clock(1.0)
        try:
            while True:
                frame = self.receive()  # workerregistered comes first
                if frame.get("type") == "error":
                    return Refused(str(frame.get("message")))
        except (Unreachable, Timeout):
            return Broken(f"the daemon on {self.path} closed the connection ({exc.strerror})")

    def receive_frame(self) -> bytes:
        """The next line, read in linear time."""
        self._wait_for_line()
        line = self._next_line()
        assert line is not None
        return line

    def receive_frames(self) -> list[bytes | str]:
        self._wait_for_line()
        *lines, rest = b"".join(self._chunks).split(b"\n")
        self._chunks = [rest] if rest else []
        self._size = len(rest)
        return list(lines)

    def _wait_for_line(self) -> None:
        """Read until a complete line is in, within the deadline and ``max_reply``."""
        while True:
            if self._chunks and b"\n" in self._chunks[-1]:
                return
            left = self._time_left()
            if left is not None:
                self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                raise Timeout() from None
            except OSError as exc:
                raise Closed(f"the daemon on {self.path} closed the connection: {exc}"
                             ) from None
            if not chunk:
                raise Closed(f"the daemon on {self.path} closed the connection")
            self._chunks.append(chunk)
            self._size += len(chunk)
            if self._size > self.max_reply and b"\n" not in chunk:
                if self._configured_limit is not None:
                    self.max_reply = max(self.max_reply, self._configured_limit() + 1024)
                    self._configured_limit = None
                if self._size > self.max_reply:
                    raise Broken(f"the daemon on {self.path} sent a frame over "
                                 f"{self.max_reply} bytes")

    def _next_line(self) -> bytes | None:
        """A complete line from what was read, or None. Only the newest chunk can hold a
        newline we have not seen, so a large reply costs one join, not one per read."""
        if not self._chunks or b"\n" not in self._chunks[-1]:
            return None
        data = b"".join(self._chunks)
        line, _, rest = data.partition(b"\n")
        self._chunks = [rest] if rest else []
        self._size = len(rest)
        return line

    def _where(self) -> str:
        return f"the socket {self.path}"

    def close(self) -> None:
        self.sock.close()


def _decode(frame: bytes | str, source: object) -> dict[str, Any]:
    try:
        value = json.loads(frame)
    except (ValueError, RecursionError):
        raise Broken(f"{source} sent a malformed frame") from None
    if not isinstance(value, dict):
        raise Broken(f"{source} sent a frame that is not a JSON object")
    return value


class WsConnection(Calls):
    """A WebSocket URL: our daemon's listener or an iii engine. Imports websockets (only
    on this path)."""

    def __init__(self, url: str, timeout_s: float | None = 10.0,
                 max_reply: int = DEFAULT_MAX_REPLY) -> None:
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
        from websockets.sync.client import connect

        headers = with_token()
        token = headers.get("Authorization")
        self.url = url
        self._start_clock(timeout_s)
        try:
            self.ws = connect(url, open_timeout=timeout_s, compression=None,
                              max_size=max_reply,
                              additional_headers=headers).__enter__()  # closed by close()
        except InvalidStatus as exc:  # it is there, and said no: say why, not "not running"
            status = exc.response.status_code
            why = bytes(exc.response.body or b"").decode(errors="replace").strip()[:200]
            hint = ("; set III_TOKEN to its token" if status == 401 and not token
                    else "; III_TOKEN does not match its token" if status == 401 else "")
            raise Broken(f"{url} refused the connection (HTTP {status}"
                         f"{': ' + why if why else ''}){hint}") from None
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise Unreachable(f"no iii engine at {url} ({exc})") from None

    def send(self, message: dict[str, Any]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self.ws.send(_encode(message).decode())
        except ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd is not None else ""
            if reason:
                raise Refused(reason) from None
            raise Broken(f"{self.url} closed the connection") from None

    def send_frames(self, frames: list[bytes]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for frame in frames:
                self.ws.send(frame.decode())
        except ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd is not None else ""
            raise (Refused(reason) if reason else Broken(f"{self.url} closed the connection")
                   ) from None

    def receive_frame(self) -> bytes | str:
        from websockets.exceptions import ConnectionClosed

        left = self._time_left()
        try:
            return self.ws.recv(timeout=left)
        except TimeoutError:
            raise Timeout() from None
        except ConnectionClosed as exc:
            raise Closed(f"{self.url} closed the connection ({exc})") from None

    def _where(self) -> str:
        return self.url

    def close(self) -> None:
        self.ws.close()


def connect(target: str, timeout_s: float | None = 10.0,
            configured_limit: Callable[[], int] | None = None) -> Calls:
    """A Unix socket path, or a ws:// / wss:// URL; ``timeout_s`` bounds the whole
    exchange; replies may be as large as ``configured_limit()`` says, else 64 MiB."""
    address = parse(target)
    if address.kind == "ws":
        limit = configured_limit() + 1024 if configured_limit else DEFAULT_MAX_REPLY
        return WsConnection(address.target, timeout_s, max(limit, DEFAULT_MAX_REPLY))
    return Connection(address.target, timeout_s, DEFAULT_MAX_REPLY, configured_limit)
