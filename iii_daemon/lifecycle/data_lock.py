"""One data directory, one daemon: an OS lock held on ``<data dir>/daemon.lock``.

Two daemons on one SQLite file would each keep their own memory of state and queues,
and after a restart one of them would find the other's acknowledged writes gone. The
socket's pidfile cannot prevent that (two sockets, one data dir), so the data dir has a
lock of its own. ``flock`` dies with the process: a ``kill -9`` leaves nothing to clean.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import IO

from iii_daemon.core.errors import StartupError

LOCK_NAME = "daemon.lock"


def acquire(data_dir: Path, socket_path: Path) -> IO[str]:
    """Lock ``data_dir`` for this process's lifetime; the file says who holds it.

    Raises:
        StartupError: another live daemon uses the directory (its pid and socket named).
    """
    path = data_dir / LOCK_NAME
    try:
        # Never through a symlink: a link planted there would make us write elsewhere.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        reason = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise StartupError(f"cannot open the data directory's lock {path}: {reason}") from None
    handle = open(fd, "r+", encoding="utf-8")  # noqa: SIM115 - held until the process exits
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder(handle)
        handle.close()
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise StartupError(f"the data directory {data_dir} is in use by another "
                               f"daemon ({holder}); stop it first or use another "
                               f"--data-dir") from None
        raise StartupError(f"cannot lock the data directory {data_dir}: "
                           f"{exc.strerror}") from None
    # The file is never removed (removing it would let a second daemon lock a new file
    # while the first still holds the old one): its content is only who holds it now.
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n{socket_path}\n")
    handle.flush()
    return handle


def _holder(handle: IO[str]) -> str:
    """``pid N on SOCKET`` as the holder wrote it (it may still be writing: say less)."""
    handle.seek(0)
    lines = handle.read(4096).splitlines()
    pid = lines[0].strip() if lines and lines[0].strip().isdigit() else "?"
    socket = lines[1].strip() if len(lines) > 1 and lines[1].strip() else "?"
    return f"pid {pid} on {socket}"
