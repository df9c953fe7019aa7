"""The directories a daemon needs: private to its user, or it refuses to start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from iii_daemon.core.errors import StartupError

# sun_path is 108 bytes on Linux (104 on BSDs), including the terminating NUL.
MAX_SOCKET_PATH = 107


def prepare_directory(socket_path: Path) -> None:
    """Create the socket's directory private to the user (0700), or check that an
    existing one is: another user who can write there could replace our socket."""
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
        raise StartupError(
            f"socket path is too long for a Unix socket ({len(str(socket_path))} bytes, "
            f"at most {MAX_SOCKET_PATH}): {socket_path}")
    prepare_private_directory(socket_path.parent, "socket directory")


def prepare_private_directory(directory: Path, what: str) -> None:
    """Create ``directory`` 0700, or refuse one owned by another user or writable by others.

    Raises:
        StartupError: the directory is not private to us (one line saying why).
    """
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StartupError(f"cannot create the {what} {directory}: {exc.strerror}") from None
    info = os.stat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise StartupError(f"the {what} {directory} is not a directory")
    if info.st_uid != os.getuid():
        raise StartupError(f"the {what} {directory} belongs to uid {info.st_uid}, not to "
                           f"you (uid {os.getuid()}); use a directory of your own")
    if info.st_mode & 0o022:
        raise StartupError(f"the {what} {directory} is writable by other users "
                           f"(mode {info.st_mode & 0o777:o}); use a private directory "
                           f"(chmod 700) so nobody can replace the daemon's files")
