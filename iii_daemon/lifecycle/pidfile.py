"""The pidfile beside the socket: whoever holds its lock owns the socket."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import IO

from iii_daemon.core.errors import StartupError
from iii_sdk.paths import pidfile_path


def acquire_pidfile(socket_path: Path) -> IO[str]:
    """Lock ``<socket>.pid`` for this process's lifetime and write our pid into it.

    The lock, not the socket file, decides who owns the socket: it dies with the
    process, so a socket left by ``kill -9`` is detected and replaced, and two daemons
    starting at once cannot both take it.

    Raises:
        StartupError: another live daemon holds the lock.
    """
    path = pidfile_path(socket_path)
    while True:
        try:
            # Never through a symlink: another user's link would make us write their file.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StartupError(f"cannot open the pidfile {path}: "
                               f"{'it is a symlink' if exc.errno == errno.ELOOP else exc.strerror}"
                               ) from None
        handle = open(fd, "r+")  # noqa: SIM115 - held open until the process exits
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            handle.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StartupError(
                    f"a daemon is already running on {socket_path} (pid {pid})") from None
            raise
        # A stopping daemon unlinks its pidfile: if we locked that unlinked file,
        # the lock guards nothing; open the path again.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def release_pidfile(socket_path: Path, handle: IO[str]) -> None:
    """Remove the pidfile, then drop the lock (clean stop)."""
    with contextlib.suppress(OSError):
        os.unlink(pidfile_path(socket_path))
    handle.close()
