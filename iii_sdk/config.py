"""The config file (cli.md § Configuration): where it is, what it may hold, reading it.

``III_CONFIG`` > ``platformdirs.user_config_dir("iii")/config.toml``. Reading never
crashes on what it does not know: unknown keys come back as warnings naming the key.
A file that is not valid TOML, or a known key with a value of the wrong type, raises
:class:`ConfigError` with the file and line.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iii_sdk.errors import IIIError
from iii_sdk.limits import DEFAULT_MAX_FRAME_BYTES

#: Every known key with its default. ``None`` defaults mean "unset" (a str when set).
DEFAULTS: dict[str, Any] = {
    "socket": None,
    "autostart": False,
    "max_frame_bytes": DEFAULT_MAX_FRAME_BYTES,
    "call_timeout_ms": 300_000,
    "websocket": {"enabled": True, "host": "127.0.0.1", "port": 49134, "token": None,
                  "allowed_origins": [], "allowed_hosts": []},
    "http": {"enabled": True, "host": "127.0.0.1", "port": 3111, "token": None,
             "max_body_bytes": 64 * 1024 * 1024, "cors_origins": [], "allowed_hosts": []},
    "history": {"events": 10_000},
    "queues": {},
    #: Environment variables an HTTP-invoked function's auth may name (none by default).
    "http_functions": {"allowed_env": []},
}

#: Whole-number keys that must be above zero.
POSITIVE_KEYS = frozenset({"max_frame_bytes", "call_timeout_ms", "history.events",
                           "http.max_body_bytes"})

#: Settings of one ``[queues.NAME]`` table.
QUEUE_KEYS: dict[str, type] = {
    "max_retries": int,
    "backoff_ms": int,
    "backoff": str,
    "concurrency": int,
    "type": str,
    "message_group_field": str,
    "visibility_timeout_ms": int,
}


class ConfigError(IIIError):
    """The config file cannot be used; the message names the file (and line)."""


@dataclass
class Config:
    values: dict[str, Any]
    path: Path
    warnings: list[str] = field(default_factory=list)

    def get(self, dotted: str) -> Any:
        node: Any = self.values
        for part in dotted.split("."):
            node = node[part]
        return node


def config_path() -> Path:
    from_env = os.environ.get("III_CONFIG")
    if from_env:
        return Path(from_env)
    import platformdirs

    return Path(platformdirs.user_config_dir("iii")) / "config.toml"


def expected_type(dotted: str) -> type | None:
    """The type a key takes, or None when the key is unknown."""
    parts = dotted.split(".")
    if len(parts) == 3 and parts[0] == "queues" and parts[1]:
        return QUEUE_KEYS.get(parts[2])
    node: Any = DEFAULTS
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict):
        return None  # a table, not a key
    if node is None:
        return str
    return type(node)


def _check(table: dict[str, Any], prefix: str, path: Path, warnings: list[str]) -> None:
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            # Known tables ([websocket], [queues], ...) and each [queues.NAME] table.
            known_table = prefix == "" and isinstance(DEFAULTS.get(key), dict)
            if known_table or prefix == "queues.":
                _check(value, f"{dotted}.", path, warnings)
            else:
                warnings.append(f"unknown config key '{dotted}' in {path}")
            continue
        wanted = expected_type(dotted)
        if wanted is None:
            warnings.append(f"unknown config key '{dotted}' in {path}")
        elif not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
            raise ConfigError(f"{path}: '{dotted}' must be {wanted.__name__}, "
                              f"got {type(value).__name__} {value!r}")
        elif isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{path}: '{dotted}' must be a list of strings, got {value!r}")
        elif isinstance(value, int) and dotted in POSITIVE_KEYS and value <= 0:
            raise ConfigError(f"{path}: '{dotted}' must be positive, got {value}")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def read_file(path: Path) -> dict[str, Any]:
    """The file's own tables (no defaults); empty when there is no file.

    Raises:
        ConfigError: not valid TOML (message has the line), or unreadable.
    """
    import tomllib

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load(path: Path | None = None) -> Config:
    """Defaults overlaid with the file.

    Raises:
        ConfigError: see :func:`read_file`, or a known key with a wrong type.
    """
    path = path or config_path()
    raw = read_file(path)
    warnings: list[str] = []
    _check(raw, "", path, warnings)
    values = copy.deepcopy(DEFAULTS)
    _merge(values, raw)
    return Config(values=values, path=path, warnings=warnings)
