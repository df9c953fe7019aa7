"""Where things live: the socket, the data dir. Shared by the SDK, the daemon and the CLI."""

from __future__ import annotations

import os
import stat
import sys
import warnings
from pathlib import Path

APP_NAME = "iii"
SOCKET_NAME = "iii.sock"
CONFIG_NAME = "config.toml"


# The XDG rules platformdirs applies on Linux, for the common case only: every ``iii``
# process resolves these paths, and importing platformdirs costs the fast paths of the
# CLI milliseconds. Anything unusual (another OS, an unset or doubtful variable) asks
# platformdirs itself; the daemon, the CLI and the SDK all call these functions, so they
# always agree.
def _xdg_home(variable: str, fallback: str) -> str | None:
    """``$variable`` if absolute, else ``$HOME/fallback`` if HOME is absolute (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    value = os.environ.get(variable, "")
    if value.startswith("/"):
        return value
    home = os.environ.get("HOME", "")
    return f"{home.rstrip('/')}/{fallback}" if home.startswith("/") else None


def _private_dir(path: str) -> bool:
    """A real directory (not a link) of ours that nobody else may enter, below a parent
    nobody else may replace it in."""
    try:
        info = os.lstat(path)
        parent = os.stat(os.path.dirname(path.rstrip("/")) or "/")
    except OSError:
        return False
    uid = os.geteuid()
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == uid
            and info.st_mode & 0o077 == 0 and parent.st_uid in (0, uid)
            and (parent.st_mode & 0o022 == 0 or bool(parent.st_mode & stat.S_ISVTX)))


def config_file_path() -> Path:
    """``III_CONFIG`` > ``$XDG_CONFIG_HOME/iii/config.toml`` > ``~/.config/iii/...``
    (platformdirs' ``user_config_dir`` off Linux)."""
    from_env = os.environ.get("III_CONFIG")
    if from_env:
        return Path(from_env)
    base = _xdg_home("XDG_CONFIG_HOME", ".config")
    if base is not None:
        return Path(base) / APP_NAME / CONFIG_NAME
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME)) / CONFIG_NAME


def _runtime_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if sys.platform.startswith("linux") and runtime.startswith("/") \
            and _private_dir(runtime) and _private_dir(f"{runtime.rstrip('/')}/{APP_NAME}"):
        return Path(runtime) / APP_NAME  # what platformdirs answers for a sound one
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
    """The config file's ``socket``, read with tomllib alone (the commands that read the
    whole config check and report it; a broken file leaves the paths usable)."""
    try:
        data = config_file_path().read_bytes()
    except OSError:
        return None
    if b"socket" not in data:
        return None
    import tomllib

    try:
        value = tomllib.loads(data.decode("utf-8")).get("socket")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
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
    base = _xdg_home("XDG_DATA_HOME", ".local/share")
    if base is not None:
        return Path(base) / APP_NAME
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))
