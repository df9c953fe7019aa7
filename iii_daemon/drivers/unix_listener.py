"""The Unix socket listener: a private socket, peer uid checked. (Which daemon owns
the socket is decided by the pidfile, in :mod:`iii_daemon.lifecycle.pidfile`.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from pathlib import Path
from typing import cast

from iii_daemon.core.errors import StartupError
from iii_daemon.drivers.hub import Hub
from iii_sdk.framing import LineReader

log = logging.getLogger(__name__)





def bind_socket(socket_path: Path) -> socket.socket:
    """Bind a 0600 listening socket at ``socket_path``, replacing a stale socket file.

    Call only while holding the pidfile lock: then any socket file there is stale.
    """
    try:
        mode = os.lstat(socket_path).st_mode
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISLNK(mode):
            raise StartupError(f"{socket_path} is a symlink; give the daemon a socket path "
                               f"of its own")
        if not stat.S_ISSOCK(mode):
            raise StartupError(f"{socket_path} exists and is not a socket; remove it first")
        os.unlink(socket_path)
        log.info("replaced a stale socket file at %s", socket_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(os.fspath(socket_path))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot bind {socket_path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(socket_path, 0o600)
    sock.listen(512)
    sock.setblocking(False)
    return sock


def peer_credentials(sock: socket.socket) -> tuple[int, int] | None:
    """``(pid, uid)`` of the process at the other end, where the platform says (Linux)."""
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return int(pid), int(uid)


def process_group(pid: int) -> int | None:
    """The process group of ``pid`` (a managed worker's connection is told by it)."""
    try:
        return os.getpgid(pid)
    except OSError:
        return None


class UnixLink(asyncio.Protocol):
    """One client on the Unix socket: NDJSON in, NDJSON out."""

    def __init__(self, hub: Hub, max_frame_bytes: int) -> None:
        self.hub = hub
        self.conn_id = 0
        self.max_frame_bytes = max_frame_bytes
        # A line over the limit is dropped and answered, not the end of the connection.
        self.reader = LineReader(max_frame_bytes, skip_oversized=True)
        self.transport: asyncio.Transport | None = None
        self._parked = 0  # bytes of an unfinished line, as last told to the hub

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        creds = peer_credentials(sock) if sock is not None else None
        if creds is not None and creds[1] != os.getuid():
            log.warning("refused a connection from uid %d", creds[1])
            transport.abort()
            return
        self.transport = transport
        group = process_group(creds[0]) if creds is not None and creds[0] > 0 else None
        self.hub.attach(self, "unix", group)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        reader = self.reader
        frames = reader.feed(data)
        buffered = reader.buffered
        if (buffered or self._parked) and not self._park(buffered):
            return
        if frames:
            self.hub.receive(self.conn_id, frames)
        if reader.oversized:
            lines, reader.oversized = reader.oversized, []
            self.hub.oversized(self.conn_id, lines, self.max_frame_bytes)

    def _park(self, buffered: int) -> bool:
        self._parked = buffered
        return self.hub.parked(self.conn_id, buffered)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.transport = None
            self.hub.detach(self.conn_id)

    # Back-pressure: while a client does not read what we send, stop reading what it
    # sends, so it cannot make us buffer without bound. The hub decides when to read
    # again (it may hold frames of ours it has not handled yet).
    def pause_writing(self) -> None:
        self.pause_reading()

    def resume_writing(self) -> None:
        self.hub.drained(self.conn_id)

    # --- Link ---------------------------------------------------------------------------

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def write(self, data: bytes | bytearray) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def close(self, restarting: bool = False) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def start_unix_server(hub: Hub, sock: socket.socket,
                            max_frame_bytes: int) -> asyncio.Server:
    return await hub.loop.create_unix_server(lambda: UnixLink(hub, max_frame_bytes),
                                             sock=sock)


def remove_socket(socket_path: Path) -> None:
    """Remove the socket file on a clean stop; call while still holding the pidfile lock."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(socket_path).st_mode):
            os.unlink(socket_path)
