"""What the socket's pidfile and the data dir's lock share: a file opened without
following symlinks, an ``flock`` that dies with the process, and a note of who holds it."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import IO

from iii_daemon.core.errors import StartupError


def open_lock(path: Path, what: str) -> IO[str]:
    """Open (creating, 0600) the lock file ``path``, never through a symlink: one planted
    there would make us write another user's file.

    Raises:
        StartupError: it cannot be opened (``what`` names it: "the pidfile").
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        reason = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise StartupError(f"cannot open {what} {path}: {reason}") from None
    return open(fd, "r+", encoding="utf-8")


def lock_or_holder(handle: IO[str]) -> str | None:
    """Take the lock without waiting: None when taken; else what its holder wrote (at
    most 4 KiB), and ``handle`` is closed.

    Raises:
        OSError: ``flock`` failed for another reason than a holder (``handle`` closed).
    """
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.seek(0)
        holder = handle.read(4096)
        handle.close()
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return holder
        raise
    return None


def write_holder(handle: IO[str], text: str) -> None:
    """Say who holds the lock now (in place of what the last holder wrote)."""
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()
