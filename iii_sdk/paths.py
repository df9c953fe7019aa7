"""Where things live: the socket, the data dir. Shared by the SDK, the daemon and the CLI."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

APP_NAME = "iii"
SOCKET_NAME = "iii.sock"


def _runtime_dir() -> Path:
    import platformdirs

    # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to a private dir
    # under /tmp; that fallback is what we want, the warning is noise for a user.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Path(platformdirs.user_runtime_dir(APP_NAME))


def default_socket_path() -> Path:
    return _runtime_dir() / SOCKET_NAME


def resolve_socket_path(explicit: str | os.PathLike[str] | None = None,
                        configured: str | None = None) -> Path:
    """``--socket`` > ``III_SOCKET`` > config ``socket`` > the user's runtime dir.

    ``configured`` is the config file's ``socket``; without it the file is read here,
    only when neither the flag nor the environment decides (it costs a TOML parse).
    """
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("III_SOCKET")
    if from_env:
        return Path(from_env)
    if configured is None:
        configured = _configured_socket()
    if configured:
        return Path(configured).expanduser()
    return default_socket_path()


def _configured_socket() -> str | None:
    from iii_sdk import config

    path = config.config_path()
    if not path.exists():
        return None
    try:
        value = config.read_file(path).get("socket")
    except config.ConfigError:
        return None  # the commands that read the config report it; paths stay usable
    return value if isinstance(value, str) else None


def pidfile_path(socket_path: Path) -> Path:
    """``<socket>.pid``: the daemon holds it locked for its lifetime (liveness = the lock)."""
    return socket_path.with_name(socket_path.name + ".pid")


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir`` > ``III_DATA_DIR`` > the user's data dir."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("III_DATA_DIR")
    if from_env:
        return Path(from_env)
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))
