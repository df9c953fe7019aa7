"""The pidfile beside the socket: whoever holds its lock owns the socket."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

from iii_daemon.core.errors import StartupError
from iii_daemon.lifecycle.lock_files import lock_or_holder, open_lock, write_holder
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
        handle = open_lock(path, "the pidfile")
        holder = lock_or_holder(handle)
        if holder is not None:
            raise StartupError(f"a daemon is already running on {socket_path} "
                               f"(pid {holder.strip() or '?'})")
        # A stopping daemon unlinks its pidfile: if we locked that unlinked file,
        # the lock guards nothing; open the path again.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        handle.close()
    write_holder(handle, f"{os.getpid()}\n")
    return handle


def release_pidfile(socket_path: Path, handle: IO[str]) -> None:
    """Remove the pidfile, then drop the lock (clean stop)."""
    with contextlib.suppress(OSError):
        os.unlink(pidfile_path(socket_path))
    handle.close()
