"""One data directory, one daemon: an OS lock held on ``<data dir>/daemon.lock``.

Two daemons on one SQLite file would each keep their own memory of state and queues,
and after a restart one of them would find the other's acknowledged writes gone. The
socket's pidfile cannot prevent that (two sockets, one data dir), so the data dir has a
lock of its own. ``flock`` dies with the process: a ``kill -9`` leaves nothing to clean.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from iii_daemon.core.errors import StartupError
from iii_daemon.lifecycle.lock_files import lock_or_holder, open_lock, write_holder

LOCK_NAME = "daemon.lock"


def acquire(data_dir: Path, socket_path: Path) -> IO[str]:
    """Lock ``data_dir`` for this process's lifetime; the file says who holds it.

    Raises:
        StartupError: another live daemon uses the directory (its pid and socket named).
    """
    handle = open_lock(data_dir / LOCK_NAME, "the data directory's lock")
    try:
        holder = lock_or_holder(handle)
    except OSError as exc:
        raise StartupError(f"cannot lock the data directory {data_dir}: "
                           f"{exc.strerror}") from None
    if holder is not None:
        raise StartupError(f"the data directory {data_dir} is in use by another daemon "
                           f"({_holder(holder)}); stop it first or use another "
                           f"--data-dir")
    # The file is never removed (removing it would let a second daemon lock a new file
    # while the first still holds the old one): its content is only who holds it now.
    write_holder(handle, f"{os.getpid()}\n{socket_path}\n")
    return handle


def _holder(text: str) -> str:
    """``pid N on SOCKET`` as the holder wrote it (it may still be writing: say less)."""
    lines = text.splitlines()
    pid = lines[0].strip() if lines and lines[0].strip().isdigit() else "?"
    socket = lines[1].strip() if len(lines) > 1 and lines[1].strip() else "?"
    return f"pid {pid} on {socket}"
